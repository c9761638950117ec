//! Classifies the test split of a dataset with a tuned model's saved early-exit thresholds and
//! prints the accuracy and how many images left at each exit:
//!
//!   cargo run --manifest-path examples/embed/Cargo.toml -- runs/default assets/fashion-mnist-demo

use dmpo_infer::TunedModel;
use dmpo_infer::backend::{self, Backend};
use dmpo_infer::data::load_splits;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_dir, data_dir] = args.as_slice() else {
        return Err("usage: dmpo-embed-example <model folder> <dataset folder>".into());
    };
    let model = TunedModel::<Backend>::load(model_dir.as_ref(), &backend::device())?;
    let test = load_splits(data_dir.as_ref())?.test;

    let mut exits = vec![0usize; model.model.num_exits()];
    let mut right = 0;
    for chunk in test.samples.chunks(64) {
        let images = chunk
            .iter()
            .map(|s| s.image.load())
            .collect::<Result<Vec<_>, _>>()?;
        for (sample, p) in chunk.iter().zip(model.classify(&images)?) {
            exits[p.exit] += 1;
            right += usize::from(p.class == sample.label);
        }
    }
    let histogram: Vec<String> = exits.iter().map(|n| n.to_string()).collect();
    println!(
        "budget {:.4} accuracy {:.4} exits {}",
        model.budget_fraction().unwrap_or(1.0),
        right as f64 / test.samples.len() as f64,
        histogram.join(";")
    );
    Ok(())
}
