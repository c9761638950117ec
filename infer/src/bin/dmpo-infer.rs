//! `dmpo-infer`: calibrate exit thresholds for a budget, evaluate the accuracy-vs-cost curve,
//! classify images with early exit, and benchmark it. Run through `cargo xtask <task>`.

/// mimalloc keeps freed activation buffers for reuse where glibc's malloc returns them to the
/// kernel after every layer (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::backend::Backend as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dmpo_import::backend::{self, Backend};
use dmpo_infer::data::{ImageDataset, ImageRef, Sample, load_splits};
use dmpo_infer::{
    Budget, Criterion, ExitPolicy, ExitScores, calibrate, collect_scores, eval_batches, evaluate,
    load_model_dir, run_early_exit, write_model_info, write_report,
};
use dmpo_model::dmpo::DmpoModel;

#[derive(Parser)]
#[command(version, about = "Adaptive early-exit inference for DMPO models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CriterionArg {
    MaxProb,
    Entropy,
    Margin,
}

impl From<CriterionArg> for Criterion {
    fn from(c: CriterionArg) -> Self {
        match c {
            CriterionArg::MaxProb => Criterion::MaxProb,
            CriterionArg::Entropy => Criterion::Entropy,
            CriterionArg::Margin => Criterion::Margin,
        }
    }
}

#[derive(Args)]
struct Data {
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
    #[arg(long, value_enum, default_value_t = CriterionArg::MaxProb)]
    criterion: CriterionArg,
}

#[derive(Subcommand)]
enum Command {
    /// Choose exit thresholds on held-out data to meet a compute budget; saved in model.json.
    Calibrate {
        #[command(flatten)]
        data: Data,
        /// Budget as a fraction of the backbone's MACs.
        #[arg(long, conflicts_with = "gmacs")]
        budget: Option<f64>,
        /// Budget in GMACs per image.
        #[arg(long)]
        gmacs: Option<f64>,
    },
    /// Accuracy-vs-cost curve on the test split: table, JSON, CSV and SVG plot.
    Eval {
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
    },
    /// Classify images (files or folders) with the calibrated early exit.
    Infer {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Image files or folders of images.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Images/s and latency, full depth vs early exit at several budgets.
    Bench {
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
    },
}

fn main() -> ExitCode {
    dmpo_import::cli::run_main(|| run(Cli::parse()))
}

type Error = Box<dyn std::error::Error>;

/// The held-out and test splits, limited as asked.
fn splits(d: &Data) -> Result<(ImageDataset, ImageDataset), Error> {
    let mut s = load_splits(&d.data)?;
    let mut held_out = s.train.split_off_held_out(d.held_out);
    if d.limit > 0 {
        held_out.samples.truncate(d.limit);
        s.test.samples.truncate(d.limit);
    }
    Ok((held_out, s.test))
}

fn scores(
    model: &DmpoModel<Backend>,
    set: &ImageDataset,
    preprocess: &dmpo_model::Preprocess,
    d: &Data,
) -> ExitScores {
    let device = backend::device();
    let batches = eval_batches::<Backend>(&set.samples, preprocess, d.batch, &device);
    collect_scores(model, batches, d.criterion.into(), model.backbone_macs())
}

fn run(cli: Cli) -> Result<(), Error> {
    backend::check_device()?;
    let device = backend::device();
    match cli.command {
        Command::Calibrate {
            data,
            budget,
            gmacs,
        } => {
            let budget = match (budget, gmacs) {
                (Some(f), _) => Budget::Fraction(f),
                (None, Some(g)) => Budget::Macs(g * 1e9),
                (None, None) => return Err("give --budget <fraction> or --gmacs <GMACs>".into()),
            };
            let (mut info, model) = load_model_dir::<Backend>(&data.model, &device)?;
            let (held_out, _) = splits(&data)?;
            let s = scores(&model, &held_out, &info.preprocess, &data);
            let (policy, sim) = calibrate(&s, budget)?;
            let fraction = sim.mean_macs / s.full_macs as f64;
            tracing::info!(
                "calibrated on {} held-out images: thresholds {:?}, {:.3} GMACs ({:.1}% of the \
                 backbone), held-out accuracy {:.2}%, exits {:?}",
                held_out.samples.len(),
                policy.thresholds,
                sim.mean_macs / 1e9,
                100.0 * fraction,
                100.0 * sim.accuracy,
                sim.exit_histogram
            );
            info.policy = Some(policy);
            info.budget_fraction = Some(budget.macs(s.full_macs) / s.full_macs as f64);
            write_model_info(&data.model, &info)?;
        }
        Command::Eval { data, budgets, out } => {
            let (info, model) = load_model_dir::<Backend>(&data.model, &device)?;
            let (held_out, test) = splits(&data)?;
            let calib = scores(&model, &held_out, &info.preprocess, &data);
            let measured = scores(&model, &test, &info.preprocess, &data);
            let name = data
                .model
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model");
            let report = evaluate(name, &calib, &measured, &budgets);
            println!("\n{report}");
            let out = out.unwrap_or_else(|| data.model.clone());
            write_report(&out, "eval", std::slice::from_ref(&report))?;
            tracing::info!("wrote {}/eval.{{json,csv,svg}}", out.display());
        }
        Command::Infer {
            model: dir,
            batch,
            paths,
        } => {
            let (info, model) = load_model_dir::<Backend>(&dir, &device)?;
            let policy = info.require_policy(&dir)?.clone();
            let files = image_files(&paths)?;
            let samples: Vec<Sample> = files
                .iter()
                .map(|p| Sample {
                    image: ImageRef::File(p.clone()),
                    label: 0,
                })
                .collect();
            println!("file\tclass\tconfidence\texit\tGMACs");
            for chunk in samples.chunks(batch.max(1)) {
                // Decode one by one so an unreadable file is named and skipped.
                let readable: Vec<Sample> = chunk
                    .iter()
                    .filter(|s| match s.image.load() {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!("{e}");
                            false
                        }
                    })
                    .cloned()
                    .collect();
                for (images, _) in
                    eval_batches::<Backend>(&readable, &info.preprocess, batch, &device)
                {
                    let preds = run_early_exit(&model, images, &policy);
                    for (s, p) in readable.iter().zip(preds) {
                        println!(
                            "{}\t{}\t{:.4}\t{}\t{:.4}",
                            s.image.describe(),
                            info.classes[p.class],
                            p.probs[p.class],
                            p.exit + 1,
                            p.macs as f64 / 1e9
                        );
                    }
                }
            }
        }
        Command::Bench {
            data,
            budgets,
            passes,
            images,
        } => bench(&data, &budgets, passes.max(1), images)?,
    }
    Ok(())
}

/// Files named directly, and the image files inside named folders (sorted).
fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file())
                .collect();
            files.sort();
            out.extend(files);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()).into());
        }
    }
    Ok(out)
}

/// One policy's measurements in `bench`.
#[derive(Default)]
struct PolicyTiming {
    pass_s: Vec<f64>,
    latencies_ms: Vec<f64>,
    /// MACs over all timed passes.
    macs: f64,
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Wall-clock of full depth and of early exit at each budget, over the same images, after a
/// warm-up pass (which also compiles the shapes batch compaction produces on GPU backends).
fn bench(data: &Data, budgets: &[f64], passes: usize, images: usize) -> Result<(), Error> {
    let device = backend::device();
    let (info, model) = load_model_dir::<Backend>(&data.model, &device)?;
    let (held_out, mut test) = splits(data)?;
    test.samples.truncate(images);
    let calib = scores(&model, &held_out, &info.preprocess, data);
    let batches = eval_batches::<Backend>(&test.samples, &info.preprocess, data.batch, &device);
    let n: usize = batches.iter().map(|(_, l)| l.len()).sum();
    // With DyT's dispatchers, the reference is the same model with every token through every
    // MLP ("dense"); "full" is then full depth with tokens skipped.
    let dense = model.dispatches().then(|| {
        let mut dense = model.clone();
        dense.dispatchers.clear();
        dense
    });
    let mut policies = Vec::new();
    if dense.is_some() {
        policies.push((
            "dense".to_string(),
            ExitPolicy::full_depth(model.num_exits()),
            1.0,
        ));
    }
    policies.push((
        "full".to_string(),
        ExitPolicy::full_depth(model.num_exits()),
        1.0,
    ));
    for &b in budgets {
        let (p, sim) = match calibrate(&calib, Budget::Fraction(b)) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("skipping budget {b}: {e}");
                continue;
            }
        };
        policies.push((
            format!("{:.0}%", 100.0 * b),
            p,
            sim.mean_macs / calib.full_macs as f64,
        ));
    }
    println!(
        "\nbench: {n} images, batch {}, {} backend, {passes} timed passes per policy (interleaved; median pass)",
        data.batch,
        backend::NAME
    );
    println!(
        "{:>6} {:>10} {:>9} {:>9} {:>10} {:>10} {:>12}",
        "policy", "images/s", "p50 ms", "p95 ms", "MACs x", "time x", "time/MACs"
    );
    // Passes are interleaved (full, budget 1, budget 2, ..., full, ...) and each policy's pass
    // time is its median, so the machine's load drifting during the run hits every policy alike
    // instead of whichever happened to run then.
    let mut timings: Vec<PolicyTiming> = policies.iter().map(|_| PolicyTiming::default()).collect();
    for pass in 0..=passes {
        for (i, ((_, policy, _), timing)) in policies.iter().zip(&mut timings).enumerate() {
            let runner = match (&dense, i) {
                (Some(dense), 0) => dense,
                _ => &model,
            };
            let start = Instant::now();
            for (images, _) in &batches {
                let t = Instant::now();
                let preds = run_early_exit(runner, images.clone(), policy);
                let _ = Backend::sync(&device);
                if pass > 0 {
                    timing.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    timing.macs += preds.iter().map(|p| p.macs as f64).sum::<f64>();
                }
            }
            if pass > 0 {
                timing.pass_s.push(start.elapsed().as_secs_f64());
            }
        }
    }
    let median_pass = |t: &PolicyTiming| median(&t.pass_s);
    let full_pass = median_pass(&timings[0]);
    let full_macs = timings[0].macs;
    for ((name, _, _), timing) in policies.iter().zip(&mut timings) {
        timing.latencies_ms.sort_by(f64::total_cmp);
        let lat = &timing.latencies_ms;
        let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
        let rate = n as f64 / median_pass(timing);
        let macs_x = full_macs / timing.macs;
        let time_x = full_pass / median_pass(timing);
        println!(
            "{name:>6} {rate:>10.1} {:>9.2} {:>9.2} {macs_x:>9.2}x {time_x:>9.2}x {:>12.2}",
            pct(0.5),
            pct(0.95),
            time_x / macs_x
        );
    }
    Ok(())
}
