//! `import`, `forward`, `bench-vit`: checkpoint conversion, the full-depth ViT on a tensor file
//! (to prove the import matches the source framework), and its images/s on random input.

use std::path::PathBuf;

use burn::prelude::*;
use clap::Args;
use dmpo_import::{HostTensor, ImportError, ImportOptions};
use dmpo_infer::backend::{self, Backend};
use dmpo_model::vit::GlobalPool;

use crate::checkpoint_args::CheckpointArgs;

/// Convert a checkpoint into a directory (config.json + model.bpk).
#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    source: Source,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

/// Run the full-depth model on the tensor `input` ([B,3,H,W] float32) of a safetensors file and
/// write `logits` and `pre_logits` (with `--all`: also `features` and `block0..`).
#[derive(Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    source: Source,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Also write every block's output tokens and the normed features.
    #[arg(long)]
    all: bool,
}

/// Time the full-depth forward pass on random images: prints images/s (median over the timed
/// passes), for comparison with PyTorch (`benches/bench_vs_torch.py`).
#[derive(Args)]
pub struct BenchVitArgs {
    #[command(flatten)]
    source: Source,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Untimed passes first (the backend compiles / allocates for the shape).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed passes.
    #[arg(long, default_value_t = 5)]
    iters: usize,
}

#[derive(Args)]
struct Source {
    /// A .safetensors / .pth checkpoint (timm or Hugging Face), or a directory from `import`.
    #[arg(long)]
    weights: PathBuf,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Pooling: token or avg (default: what the checkpoint implies).
    #[arg(long, value_parser = parse_pool)]
    global_pool: Option<GlobalPool>,
    /// LayerNorm epsilon (default: timm 1e-6; Hugging Face config value for HF checkpoints).
    #[arg(long)]
    norm_eps: Option<f64>,
}

fn parse_pool(s: &str) -> Result<GlobalPool, String> {
    match s {
        "token" => Ok(GlobalPool::Token),
        "avg" => Ok(GlobalPool::Avg),
        _ => Err(format!("`{s}`: expected `token` or `avg`")),
    }
}

impl Source {
    fn options(&self) -> ImportOptions {
        ImportOptions {
            global_pool: self.global_pool,
            norm_eps: self.norm_eps,
            ..self.checkpoint.options()
        }
    }
}

pub fn import(a: ImportArgs) -> Result<(), ImportError> {
    let ImportArgs { source, out } = a;
    let device = backend::device();
    let imported =
        dmpo_import::import_checkpoint::<Backend>(&source.weights, &source.options(), &device)?;
    let info = dmpo_import::save_backbone(
        &out,
        &imported.config,
        &imported.preprocess,
        imported.model,
        &source.weights.display().to_string(),
    )?;
    let v = &info.vit;
    tracing::info!(
        "imported {}: {} blocks, width {}, {} heads, patch {}, {}px, {} classes -> {}",
        source.weights.display(),
        v.depth,
        v.embed_dim,
        v.num_heads,
        v.patch_size,
        v.img_size,
        v.num_classes,
        out.display()
    );
    Ok(())
}

pub fn forward(a: ForwardArgs) -> Result<(), ImportError> {
    let ForwardArgs {
        source,
        input,
        output,
        all,
    } = a;
    let device = backend::device();
    let (info, model) =
        dmpo_import::load_any::<Backend>(&source.weights, &source.options(), &device)?;
    let mut tensors = dmpo_import::read_tensor_file(&input)?;
    let x = tensors
        .tensors
        .remove("input")
        .ok_or_else(|| ImportError::MissingKey {
            path: input.clone(),
            key: "input".into(),
            expected: vec![0, info.vit.in_chans, info.vit.img_size, info.vit.img_size],
        })?;
    let v = &info.vit;
    if x.shape.len() != 4 || x.shape[1..] != [v.in_chans, v.img_size, v.img_size] {
        let expected = vec![x_batch(&x), v.in_chans, v.img_size, v.img_size];
        return Err(ImportError::ShapeMismatch {
            path: input,
            key: "input".into(),
            found: x.shape,
            expected,
        });
    }
    let images = Tensor::<Backend, 4>::from_data(TensorData::new(x.data, x.shape), &device);
    tracing::info!(
        "running {} blocks on {} ({})",
        v.depth,
        backend::NAME,
        input.display()
    );
    let out = model.forward_all(images);
    let mut result = vec![
        ("logits".to_string(), host(out.logits)),
        ("pre_logits".to_string(), host(out.pre_logits)),
    ];
    if all {
        result.push(("features".into(), host(out.features)));
        for (i, b) in out.blocks.into_iter().enumerate() {
            result.push((format!("block{i}"), host(b)));
        }
    }
    dmpo_import::write_safetensors(&output, &result)?;
    tracing::info!("wrote {}", output.display());
    Ok(())
}

pub fn bench_vit(a: BenchVitArgs) -> Result<(), ImportError> {
    let BenchVitArgs {
        source,
        batch,
        warmup,
        iters,
    } = a;
    let device = backend::device();
    let (info, model) =
        dmpo_import::load_any::<Backend>(&source.weights, &source.options(), &device)?;
    let v = &info.vit;
    let x = Tensor::<Backend, 4>::random(
        [batch.max(1), v.in_chans, v.img_size, v.img_size],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Reading the logits back waits for the device: each pass is timed to completion.
    let pass = || model.forward(x.clone()).into_data();
    for _ in 0..warmup {
        pass();
    }
    let mut seconds: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            pass();
            start.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    let pct = |q: f64| dmpo_infer::percentile(&seconds, q);
    let (median, p95, p99) = (seconds[seconds.len() / 2], pct(0.95), pct(0.99));
    let macs = v.macs();
    let gflops = 2.0 * macs as f64 * batch as f64 / median / 1e9;
    tracing::info!(
        "{} on {}: batch {batch}, median {:.1} ms (p95 {:.1}, p99 {:.1}) over {} passes, {gflops:.1} GFLOP/s",
        source.weights.display(),
        backend::NAME,
        median * 1e3,
        p95 * 1e3,
        p99 * 1e3,
        seconds.len()
    );
    // The one machine-readable line, on stdout.
    let line = format!(
        "{}\n",
        serde_json::json!({
            "backend": backend::NAME,
            "batch": batch,
            "median_s": median,
            "p95_s": p95,
            "p99_s": p99,
            "images_per_s": batch as f64 / median,
            "macs_per_image": macs,
            "gflops": gflops,
        })
    );
    std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes()).map_err(|source| {
        ImportError::Io {
            path: "<stdout>".into(),
            source,
        }
    })?;
    Ok(())
}

fn x_batch(x: &HostTensor) -> usize {
    x.shape.first().copied().unwrap_or(1)
}

fn host<const D: usize>(t: Tensor<Backend, D>) -> HostTensor {
    let data = t.into_data();
    let shape = data.shape.to_vec();
    HostTensor::new(shape, data.convert::<f32>().into_vec().expect("f32 tensor"))
}
