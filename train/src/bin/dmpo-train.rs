//! `dmpo-train`: tune a backbone with DMPO (or the plain multi-exit baseline) on a dataset,
//! then calibrate and evaluate early exit. Run through `cargo xtask train|compare`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::backend::Autodiff;
use clap::{Args, Parser, Subcommand};
use dmpo_import::backend::{self, Backend};
use dmpo_import::{ImportOptions, TrainedBinding, load_any, save_backbone, save_trained};
use dmpo_infer::data::{ImageDataset, load_splits};
use dmpo_infer::{
    BACKBONE_DIR, Budget, Criterion, EvalReport, ModelInfo, TRAINED_FILE, calibrate,
    collect_scores, eval_batches, evaluate, write_model_info, write_report,
};
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::vit::preset;
use dmpo_train::{
    LossSchedule, PretrainConfig, StepBenchConfig, TrainConfig, Tuning, bench_train_step, pretrain,
    train,
};

type TrainBackend = Autodiff<Backend>;
type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(version, about = "Tune a ViT with DMPO and evaluate early exit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tune with DMPO (or `--baseline`), then calibrate and evaluate early exit.
    Train {
        #[command(flatten)]
        run: RunArgs,
        /// The plain multi-exit baseline: no bypass, linear heads, one-phase uniform loss.
        #[arg(long)]
        baseline: bool,
        /// Continue an interrupted run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
    },
    /// Train DMPO and the baseline on the same data and budget; plot both curves together.
    Compare {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Pretrain the embedded demo backbone on formula-driven synthetic images.
    Pretrain {
        #[arg(long, default_value = DEFAULT_BACKBONE)]
        out: PathBuf,
        /// Override the recipe's epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Override the recipe's synthetic images per class.
        #[arg(long)]
        per_class: Option<usize>,
    },
    /// Time the training step (forward of every exit, loss, backward, AdamW) on random images of
    /// a randomly initialised timm architecture; prints one JSON line (images/s, peak memory).
    /// Against PyTorch: `benches/bench_train_vs_torch.py`.
    BenchStep {
        /// timm architecture name, e.g. vit_base_patch16_224.
        #[arg(long)]
        arch: String,
        /// Frozen backbone (DMPO) or full fine-tuning.
        #[arg(long, value_enum, default_value_t = Tuning::Frozen)]
        tuning: Tuning,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 100)]
        classes: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 3)]
        steps: usize,
    },
    /// Write a class-balanced subset of an IDX dataset (the demo data in assets/).
    Subset {
        /// An MNIST-style directory (e.g. /usr/share/datasets/fashion-mnist).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        train_per_class: usize,
        #[arg(long, default_value_t = 100)]
        test_per_class: usize,
    },
}

/// The embedded default: backbone, demo data and output, relative to the workspace.
const DEFAULT_BACKBONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/backbone");
const DEFAULT_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist-demo");
const DEFAULT_OUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/default");

#[derive(Args, Clone)]
struct RunArgs {
    /// Backbone: a checkpoint file (timm / HF / PyTorch) or a directory from `import`
    /// (default: the embedded demo backbone).
    #[arg(long, default_value = DEFAULT_BACKBONE)]
    backbone: PathBuf,
    #[arg(long)]
    arch: Option<String>,
    #[arg(long)]
    heads: Option<usize>,
    /// Dataset directory (IDX, CIFAR, VTAB-1k lists or train/ + val/ image folders; default:
    /// the embedded Fashion-MNIST subset).
    #[arg(long, default_value = DEFAULT_DATA)]
    data: PathBuf,
    /// Output directory.
    #[arg(long, default_value = DEFAULT_OUT)]
    out: PathBuf,
    /// Blocks after which the exits sit (default: every depth/4).
    #[arg(long, value_delimiter = ',')]
    exits: Vec<usize>,
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate [default: 1e-3; 5e-3 on the embedded demo data].
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Adapter bottleneck width.
    #[arg(long, default_value_t = 16)]
    adapter_dim: usize,
    /// Adapter branch scale [default: 0.1, large datasets; 1.0 on the embedded demo data, as
    /// DyT uses for small VTAB-1k sets].
    #[arg(long)]
    adapter_scale: Option<f64>,
    /// Use at most this many training images per class (0 = all).
    #[arg(long, default_value_t = 0)]
    per_class: usize,
    /// Use at most this many test images (0 = all).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
    /// Fraction of the training split held out for validation and calibration.
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// No random crops / flips.
    #[arg(long)]
    no_augment: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Budgets (fractions of the backbone's MACs) for the evaluation curve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.3,0.4,0.5,0.6,0.7,0.8,0.9"
    )]
    budgets: Vec<f64>,
    /// Budget whose thresholds are saved in model.json for `infer`.
    #[arg(long, default_value_t = 0.5)]
    budget: f64,
}

fn main() -> ExitCode {
    dmpo_import::cli::run_main(|| run(Cli::parse()))
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Train {
            run,
            baseline,
            resume,
        } => {
            let report = tune(&run, baseline, resume, &run.out)?;
            println!("\n{report}");
        }
        Command::Compare { run } => {
            let dmpo = tune(&run, false, false, &run.out.join("dmpo"))?;
            let base = tune(&run, true, false, &run.out.join("baseline"))?;
            println!("\n{dmpo}\n{base}");
            write_report(&run.out, "compare", &[dmpo, base])?;
            tracing::info!("wrote {}/compare.{{json,csv,svg}}", run.out.display());
        }
        Command::Pretrain {
            out,
            epochs,
            per_class,
        } => {
            let mut recipe = PretrainConfig::new();
            if let Some(e) = epochs {
                recipe.train.epochs = e;
            }
            if let Some(n) = per_class {
                recipe.per_class = n;
            }
            let device = backend::device();
            let artifacts =
                std::env::temp_dir().join(format!("dmpo-pretrain-{}", std::process::id()));
            let (vit, preprocess) = pretrain::<TrainBackend>(&recipe, &artifacts, &device)?;
            let source = "cargo xtask pretrain: formula-driven synthetic patterns (train/src/synthetic.rs), recipe in pretrain.json";
            save_backbone(&out, &recipe.vit, &preprocess, vit, source)?;
            dmpo_import::write_atomic(&out.join("pretrain.json"), recipe.to_string().as_bytes())?;
            tracing::info!("pretrained backbone written to {}", out.display());
        }
        Command::BenchStep {
            arch,
            tuning,
            batch,
            classes,
            warmup,
            steps,
        } => {
            let vit = preset(&arch)
                .ok_or_else(|| format!("`{arch}` is not a timm ViT name this crate knows"))?
                .with_num_classes(classes);
            let device = backend::device();
            let model =
                DmpoConfig::new(classes).init(vit.init::<TrainBackend>(&device), &device)?;
            let config = StepBenchConfig {
                batch: batch.max(1),
                warmup,
                steps: steps.max(1),
                tuning,
            };
            let report = bench_train_step(model, &config, &device);
            tracing::info!(
                "{arch} on {}: {tuning:?}, batch {batch}, median step {:.1} ms, {} of {} parameters train",
                backend::NAME,
                report.step_s * 1e3,
                report.trainable_params,
                report.total_params
            );
            let mut line = serde_json::to_value(&report)?;
            line["backend"] = backend::NAME.into();
            line["arch"] = arch.into();
            // The one machine-readable line, on stdout.
            println!("{line}");
        }
        Command::Subset {
            from,
            out,
            train_per_class,
            test_per_class,
        } => write_subset(&from, &out, train_per_class, test_per_class)?,
    }
    Ok(())
}

/// The training, held-out and test splits the arguments ask for.
fn datasets(a: &RunArgs) -> Result<(ImageDataset, ImageDataset, ImageDataset), Error> {
    let mut s = load_splits(&a.data)?;
    if a.per_class > 0 {
        s.train.take_per_class(a.per_class);
    }
    let held_out = s.train.split_off_held_out(a.held_out);
    if a.test_limit > 0 {
        s.test.samples.truncate(a.test_limit);
    }
    Ok((s.train, held_out, s.test))
}

/// Trains one model into `out` and evaluates it.
fn tune(a: &RunArgs, baseline: bool, resume: bool, out: &Path) -> Result<EvalReport, Error> {
    let device = backend::device();
    // The embedded demo data is small: it gets the small-data recipe unless told otherwise.
    let demo = a.data == Path::new(DEFAULT_DATA);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (train_set, held_out, test) = datasets(a)?;
    let classes = train_set.classes.clone();

    // The backbone travels with the model: copy it into the output directory once.
    let backbone_dir = out.join(BACKBONE_DIR);
    let opts = ImportOptions {
        arch: a.arch.clone(),
        num_heads: a.heads,
        ..Default::default()
    };
    let (info, backbone) = if resume && backbone_dir.is_dir() {
        dmpo_import::load_backbone::<TrainBackend>(&backbone_dir, &device)?
    } else {
        let (info, backbone) = load_any::<TrainBackend>(&a.backbone, &opts, &device)?;
        let source = a.backbone.display().to_string();
        let info = save_backbone(
            &backbone_dir,
            &info.vit,
            &info.preprocess,
            backbone.clone(),
            &source,
        )?;
        (info, backbone)
    };

    let mut dmpo = if baseline {
        DmpoConfig::baseline(classes.len())
    } else {
        DmpoConfig::new(classes.len())
    };
    dmpo.exits = a.exits.clone();
    dmpo.adapter = Some(
        dmpo_model::dmpo::AdapterConfig::new()
            .with_dim(a.adapter_dim)
            .with_scale(a.adapter_scale.unwrap_or(if demo { 1.0 } else { 0.1 })),
    );
    // Seeded before the add-ons are initialised: the same seed gives the same run.
    <TrainBackend as burn::prelude::Backend>::seed(&device, a.seed);
    let model: DmpoModel<TrainBackend> = dmpo.init(backbone, &device)?;
    let counts = model.param_counts();
    tracing::info!(
        "{} model: exits after blocks {:?}, {} trainable of {} parameters ({:.2}%)",
        if baseline { "baseline" } else { "DMPO" },
        model.exits,
        counts.trainable,
        counts.total,
        100.0 * counts.trainable as f64 / counts.total as f64
    );
    let mut model_info = ModelInfo::new(dmpo.clone(), info.preprocess.clone(), classes);
    write_model_info(out, &model_info)?;

    let schedule = if baseline {
        LossSchedule::uniform()
    } else {
        LossSchedule::new()
    };
    let config = TrainConfig::new()
        .with_epochs(a.epochs)
        .with_batch_size(a.batch)
        .with_lr(a.lr.unwrap_or(if demo { 5e-3 } else { 1e-3 }))
        .with_warmup_epochs(a.warmup_epochs)
        .with_weight_decay(a.weight_decay)
        .with_label_smoothing(a.label_smoothing)
        .with_seed(a.seed)
        .with_num_workers(a.workers)
        .with_schedule(schedule)
        .with_augment(!a.no_augment);
    let artifacts = out.join("training");
    let resume_epoch = if resume {
        dmpo_train::last_complete_checkpoint(
            &artifacts.join("checkpoint"),
            dmpo_train::CHECKPOINT_EXTENSION,
        )
    } else {
        None
    };
    if let Some(e) = resume_epoch {
        tracing::info!("resuming after epoch {e}");
    }
    let trained = train(
        model,
        train_set,
        held_out.clone(),
        &info.preprocess,
        &config,
        &artifacts,
        resume_epoch,
        &device,
    )?;
    dmpo_train::write_epoch_metrics(&artifacts, out)?;
    let binding = TrainedBinding::new(&dmpo, &info.vit, &trained);
    save_trained(&out.join(TRAINED_FILE), &trained, &binding)?;

    // Calibrate on the held-out split, measure on the test split.
    let full = trained.backbone_macs();
    let batches = |set: &ImageDataset| {
        eval_batches::<Backend>(&set.samples, &info.preprocess, a.batch, &device)
    };
    let calib = collect_scores(&trained, batches(&held_out), Criterion::MaxProb, full);
    let measured = collect_scores(&trained, batches(&test), Criterion::MaxProb, full);
    let name = if baseline { "baseline" } else { "DMPO" };
    let report = evaluate(name, &calib, &measured, &a.budgets);
    write_report(out, "eval", std::slice::from_ref(&report))?;
    match calibrate(&calib, Budget::Fraction(a.budget)) {
        Ok((policy, _)) => {
            model_info.policy = Some(policy);
            model_info.budget_fraction = Some(a.budget);
            write_model_info(out, &model_info)?;
        }
        Err(e) => tracing::warn!("no thresholds saved for budget {}: {e}", a.budget),
    }
    tracing::info!(
        "model, thresholds for {:.0}% budget and eval.{{json,csv,svg}} in {}",
        100.0 * a.budget,
        out.display()
    );
    Ok(report)
}

/// Copies the first `n` images of each class of an IDX dataset's splits into gzip'ed IDX files.
fn write_subset(from: &Path, out: &Path, train_n: usize, test_n: usize) -> Result<(), Error> {
    use std::io::Write;
    std::fs::create_dir_all(out)?;
    for (prefix, n) in [("train", train_n), ("t10k", test_n)] {
        let find = |kind: &str| {
            let plain = from.join(format!("{prefix}-{kind}"));
            if plain.is_file() {
                plain
            } else {
                from.join(format!("{prefix}-{kind}.gz"))
            }
        };
        let images = dmpo_infer::data::read_idx_images(&find("images-idx3-ubyte"))?;
        let labels = dmpo_infer::data::read_idx_labels(&find("labels-idx1-ubyte"))?;
        let mut counts = [0usize; 256];
        let keep: Vec<usize> = (0..labels.len())
            .filter(|&i| {
                counts[labels[i]] += 1;
                counts[labels[i]] <= n
            })
            .collect();
        let (rows, cols) = (images[0].height(), images[0].width());
        let mut img_bytes = vec![0, 0, 8, 3];
        for v in [keep.len() as u32, rows, cols] {
            img_bytes.extend(v.to_be_bytes());
        }
        let mut lbl_bytes = vec![0, 0, 8, 1];
        lbl_bytes.extend((keep.len() as u32).to_be_bytes());
        for &i in &keep {
            img_bytes.extend_from_slice(images[i].as_raw());
            lbl_bytes.push(labels[i] as u8);
        }
        for (kind, bytes) in [
            ("images-idx3-ubyte", img_bytes),
            ("labels-idx1-ubyte", lbl_bytes),
        ] {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            gz.write_all(&bytes)?;
            let path = out.join(format!("{prefix}-{kind}.gz"));
            dmpo_import::write_atomic(&path, &gz.finish()?)?;
        }
        tracing::info!("{prefix}: {} images", keep.len());
    }
    Ok(())
}
