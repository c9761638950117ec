//! `calibrate`, `eval`, `infer`, `bench`: the early-exit runtime's tasks, each a few library
//! calls of dmpo-infer.

use std::path::PathBuf;

use clap::Args;
use dmpo_infer::backend::{self, Backend};
use dmpo_infer::data::{ImageDataset, ImageRef, image_files, load_splits};
use dmpo_infer::{
    BenchConfig, Budget, Criterion, ExitScores, TunedModel, bench_early_exit, calibrate,
    collect_scores, eval_batches, evaluate, write_model_info, write_report,
};

use crate::Error;

/// A tuned model and the dataset its thresholds are chosen (and measured) on.
#[derive(Args)]
pub struct Data {
    /// A tuned model directory (from `train`).
    #[arg(long)]
    model: PathBuf,
    /// Dataset directory (IDX, CIFAR, VTAB-1k lists or train/ + val/ image folders).
    #[arg(long)]
    data: PathBuf,
    /// Fraction of the training split held out for calibration (the same one training
    /// validated on).
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// Use at most this many images of each split (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Confidence criterion: max-prob, entropy or margin.
    #[arg(long, default_value = "max-prob", value_parser = parse_criterion)]
    criterion: Criterion,
}

fn parse_criterion(s: &str) -> Result<Criterion, String> {
    match s {
        "max-prob" => Ok(Criterion::MaxProb),
        "entropy" => Ok(Criterion::Entropy),
        "margin" => Ok(Criterion::Margin),
        _ => Err(format!(
            "`{s}` is not a criterion; choose max-prob, entropy or margin"
        )),
    }
}

/// Choose exit thresholds on held-out data to meet a compute budget; saved in model.json.
#[derive(Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    data: Data,
    /// Budget as a fraction of the backbone's MACs.
    #[arg(long, conflicts_with = "gmacs")]
    budget: Option<f64>,
    /// Budget in GMACs per image.
    #[arg(long)]
    gmacs: Option<f64>,
}

/// Accuracy-vs-cost curve on the test split: table, JSON, CSV and SVG plot.
#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    data: Data,
    /// Budgets (fractions of the backbone's MACs) to calibrate and measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    budgets: Vec<f64>,
    /// Where to write eval.{json,csv,svg} (default: the model directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Classify images (files or folders) with the calibrated early exit.
#[derive(Args)]
pub struct InferArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Image files or folders of images.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Images/s and latency, full depth vs early exit at several budgets.
#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    data: Data,
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7")]
    budgets: Vec<f64>,
    /// Timed passes over the benchmark images (after one warm-up pass).
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Benchmark images taken from the test split.
    #[arg(long, default_value_t = 512)]
    images: usize,
}

/// The held-out and test splits, limited as asked; a split with no image is refused.
fn splits(d: &Data) -> Result<(ImageDataset, ImageDataset), Error> {
    let mut s = load_splits(&d.data)?;
    let mut held_out = s.train.split_off_held_out(d.held_out);
    if d.limit > 0 {
        held_out.samples.truncate(d.limit);
        s.test.samples.truncate(d.limit);
    }
    for (name, set) in [("held-out", &held_out), ("test", &s.test)] {
        if set.samples.is_empty() {
            return Err(format!("{}: the {name} split has no images", d.data.display()).into());
        }
    }
    Ok((held_out, s.test))
}

/// Every exit's confidence and correctness on `set`; a set none of whose images could be read
/// is refused.
fn scores(model: &TunedModel<Backend>, set: &ImageDataset, d: &Data) -> Result<ExitScores, Error> {
    let batches = eval_batches::<Backend>(
        &set.samples,
        &model.info.preprocess,
        d.batch,
        &backend::device(),
    );
    if batches.is_empty() {
        return Err(format!(
            "{}: none of the {} images of the split could be read",
            d.data.display(),
            set.samples.len()
        )
        .into());
    }
    let full = model.model.backbone_macs();
    Ok(collect_scores(&model.model, batches, d.criterion, full))
}

pub fn calibrate_task(a: CalibrateArgs) -> Result<(), Error> {
    let budget = match (a.budget, a.gmacs) {
        (Some(f), _) => Budget::Fraction(f),
        (None, Some(g)) => Budget::Macs(g * 1e9),
        (None, None) => return Err("give --budget <fraction> or --gmacs <GMACs>".into()),
    };
    let mut model = TunedModel::<Backend>::load(&a.data.model, &backend::device())?;
    let (held_out, _) = splits(&a.data)?;
    let s = scores(&model, &held_out, &a.data)?;
    let (policy, sim) = calibrate(&s, budget)?;
    tracing::info!(
        "calibrated on {} held-out images: thresholds {:?}, {:.3} GMACs ({:.1}% of the \
         backbone), held-out accuracy {:.2}%, exits {:?}",
        held_out.samples.len(),
        policy.thresholds,
        sim.mean_macs / 1e9,
        100.0 * sim.mean_macs / s.full_macs as f64,
        100.0 * sim.accuracy,
        sim.exit_histogram
    );
    let fraction = budget.macs(s.full_macs) / s.full_macs as f64;
    model.info.set_default_budget(fraction, policy);
    write_model_info(&a.data.model, &model.info)?;
    Ok(())
}

pub fn eval_task(a: EvalArgs) -> Result<(), Error> {
    let model = TunedModel::<Backend>::load(&a.data.model, &backend::device())?;
    let (held_out, test) = splits(&a.data)?;
    let calib = scores(&model, &held_out, &a.data)?;
    let measured = scores(&model, &test, &a.data)?;
    let name = a
        .data
        .model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model");
    let report = evaluate(name, &calib, &measured, &a.budgets);
    println!("\n{report}");
    let out = a.out.unwrap_or_else(|| a.data.model.clone());
    write_report(&out, "eval", std::slice::from_ref(&report))?;
    tracing::info!("wrote {}/eval.{{json,csv,svg}}", out.display());
    Ok(())
}

/// Every readable image is classified and printed (tab-separated, on stdout); every unreadable
/// one is named on stderr and makes the task fail after the others are done.
pub fn infer_task(a: InferArgs) -> Result<(), Error> {
    let model = TunedModel::<Backend>::load(&a.model, &backend::device())?;
    let policy = model.policy()?.clone();
    let files = image_files(&a.paths)?;
    println!("file\tclass\tconfidence\texit\tGMACs");
    let mut unreadable = 0usize;
    for chunk in files.chunks(a.batch.max(1)) {
        let mut images = Vec::with_capacity(chunk.len());
        let mut names = Vec::with_capacity(chunk.len());
        for path in chunk {
            let image = ImageRef::File(path.clone());
            match image.load() {
                Ok(decoded) => {
                    images.push(decoded);
                    names.push(image.describe());
                }
                Err(e) => {
                    tracing::error!("{e}");
                    unreadable += 1;
                }
            }
        }
        if images.is_empty() {
            continue;
        }
        for (name, p) in names.iter().zip(model.classify_with(&images, &policy)?) {
            println!(
                "{name}\t{}\t{:.4}\t{}\t{:.4}",
                model.classes()[p.class],
                p.probs[p.class],
                p.exit + 1,
                p.macs as f64 / 1e9
            );
        }
    }
    if unreadable > 0 {
        return Err(format!(
            "{unreadable} of {} files could not be read as images (named above)",
            files.len()
        )
        .into());
    }
    Ok(())
}

/// Wall-clock of full depth and of early exit at each budget, over the same images.
pub fn bench_task(a: BenchArgs) -> Result<(), Error> {
    let device = backend::device();
    let model = TunedModel::<Backend>::load(&a.data.model, &device)?;
    let (held_out, mut test) = splits(&a.data)?;
    test.samples.truncate(a.images);
    let calib = scores(&model, &held_out, &a.data)?;
    let batches =
        eval_batches::<Backend>(&test.samples, &model.info.preprocess, a.data.batch, &device);
    let n: usize = batches.iter().map(|(_, l)| l.len()).sum();
    let config = BenchConfig {
        budgets: a.budgets,
        passes: a.passes.max(1),
    };
    let timings = bench_early_exit(&model.model, &calib, &batches, &config, &device)?;
    println!(
        "\nbench: {n} images, batch {}, {} backend, {} timed passes per policy (interleaved; median pass)",
        a.data.batch,
        backend::NAME,
        config.passes
    );
    println!(
        "{:>6} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>12}",
        "policy", "images/s", "p50 ms", "p95 ms", "p99 ms", "MACs x", "time x", "time/MACs"
    );
    for t in &timings {
        println!(
            "{:>6} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}x {:>9.2}x {:>12.2}",
            t.name,
            t.images_per_s,
            t.p50_ms,
            t.p95_ms,
            t.p99_ms,
            t.macs_speedup,
            t.time_speedup,
            t.time_speedup / t.macs_speedup
        );
    }
    // The same figures as one machine-readable line, last on stdout (as bench-vit and
    // bench-step print theirs), for scripts that run interleaved rounds.
    let line = serde_json::json!({
        "backend": backend::NAME,
        "images": n,
        "batch": a.data.batch,
        "passes": config.passes,
        "policies": timings,
    });
    println!("{line}");
    Ok(())
}
