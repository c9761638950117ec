//! An app that embeds dmpo-burn: load a tuned model folder and classify images with early exit,
//! on the backend this crate was built with (Flex, the CPU, by default).
//!
//! cargo run --release -p dmpo-infer --example classify -- runs/default shirt.png boot.jpg
//! cargo run --release -p dmpo-infer --no-default-features --features wgpu --example classify -- ...

use dmpo_infer::TunedModel;
use dmpo_infer::backend::{self, Backend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: classify <model folder> <image>...")?;
    let device = backend::device();
    let model = TunedModel::<Backend>::load(dir.as_ref(), &device)?;

    let paths: Vec<String> = args.collect();
    let images = paths
        .iter()
        .map(|p| dmpo_infer::image::open(p).map_err(|e| format!("{p}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;

    // Early exit under the thresholds saved with the model: each image leaves at the first
    // exit confident enough, and pays only for the blocks it ran.
    for (path, p) in paths.iter().zip(model.classify(&images)?) {
        println!(
            "{path}: {} ({:.2}) at exit {} of {}, {:.4} GMACs",
            model.classes()[p.class],
            p.confidence,
            p.exit + 1,
            model.model.num_exits(),
            p.macs as f64 / 1e9
        );
    }
    Ok(())
}
