//! Serving a tuned model folder from an app's own `main`, on the backend the app chose:
//!
//! ```text
//! cargo run --release -p dmpo-serve --example serve -- runs/default
//! curl --data-binary @shirt.png -H 'Content-Type: image/png' localhost:8080/v1/classify
//! ```
//!
//! An app already on tokio calls `dmpo_serve::serve` with its own listener and shutdown future.

use dmpo_infer::TunedModel;
use dmpo_serve::{ServeConfig, serve_until_signal};

type B = burn::backend::NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runs/default".into());
    let model = TunedModel::<B>::load(dir.as_ref(), &Default::default())?;
    serve_until_signal(model, ServeConfig::default())?;
    Ok(())
}
