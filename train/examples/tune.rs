//! Tuning from code: the embedded demo backbone tuned with DMPO on the embedded demo data, with
//! the demo recipe, then calibrated for a 50 % budget. The model folder it writes is what
//! `dmpo-infer`'s `classify` example and `cargo xtask infer` load.
//!
//! cargo run --release -p dmpo-train --example tune -- runs/example [epochs]

use burn::backend::Autodiff;
use dmpo_infer::backend::{self, Backend};
use dmpo_train::{BackboneSource, DataOptions, Recipe, TuneData, tune};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "runs/example".into());
    let mut config = Recipe::Demo.config().with_budget(0.5);
    if let Some(epochs) = args.next() {
        config.train.epochs = epochs.parse()?;
    }

    let data = TuneData::load(
        "assets/fashion-mnist-demo".as_ref(),
        &DataOptions::default(),
    )?;
    let backbone = BackboneSource::new("assets/backbone");
    let device = backend::device();
    let tuned =
        tune::<Autodiff<Backend>>(&config, &backbone, data, out.as_ref(), false, &[device])?;

    println!("{}", tuned.report);
    println!(
        "saved in {out}: {} classes, thresholds {:?} for {:.0} % of the backbone's MACs",
        tuned.model.classes().len(),
        tuned.model.policy()?.thresholds,
        100.0 * config.budget
    );
    Ok(())
}
