//! Training-step throughput: the step the Learner runs (every exit's forward, the weighted
//! loss, its guard, backward, decoupled decay, AdamW), timed on random images. Frozen backbone
//! (the DMPO recipe) against full fine-tuning shows what freezing saves; the same step in
//! PyTorch (`benches/bench_train_vs_torch.py`) shows where Burn stands.

use std::time::Instant;

use burn::module::{ModuleMapper, Param};
use burn::optim::AdamWConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use burn::train::TrainStep;
use dmpo_model::dmpo::DmpoModel;
use serde::Serialize;

use crate::{ExitBatch, LossGuard, Trainee};
use dmpo_infer::PeakMemory;

/// Which parameters train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tuning {
    /// Backbone frozen; adapters, bypasses and exit heads train (DMPO).
    Frozen,
    /// Every parameter trains (the cost freezing avoids).
    Full,
}

impl std::str::FromStr for Tuning {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "frozen" => Ok(Tuning::Frozen),
            "full" => Ok(Tuning::Full),
            _ => Err(format!("`{s}` is not a tuning; choose frozen or full")),
        }
    }
}

/// The model `bench-step` times for `arch`: a timm architecture by name with DMPO's default
/// exits, or `demo`: the embedded demo backbone's architecture with the demo recipe's exits and
/// heads.
pub fn bench_model_config(
    arch: &str,
    classes: usize,
) -> Result<(dmpo_model::vit::VitConfig, dmpo_model::dmpo::DmpoConfig), String> {
    use dmpo_model::dmpo::{AdapterConfig, DmpoConfig};
    let (vit, dmpo) = if arch == "demo" {
        let demo = crate::Recipe::Demo.config();
        let mut dmpo = DmpoConfig::new(classes);
        dmpo.exits = demo.exits.clone();
        dmpo.covariance.dim = demo.cov_dim;
        dmpo.covariance.fuse_cls = demo.fuse_cls;
        dmpo.adapter = Some(AdapterConfig::new().with_scale(demo.adapter_scale));
        (crate::demo_vit_config(), dmpo)
    } else {
        let vit = dmpo_model::vit::preset(arch).ok_or_else(|| {
            format!("`{arch}` is not a timm ViT name this crate knows, nor `demo`")
        })?;
        (vit, DmpoConfig::new(classes))
    };
    Ok((vit.with_num_classes(classes), dmpo))
}

/// What to time.
#[derive(Debug, Clone)]
pub struct StepBenchConfig {
    pub batch: usize,
    /// Untimed steps first (allocation, kernel selection).
    pub warmup: usize,
    /// Timed steps; the median is reported.
    pub steps: usize,
    pub tuning: Tuning,
}

/// One measurement, as `dmpo-train bench-step` prints it (a JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub tuning: Tuning,
    pub batch: usize,
    pub steps: usize,
    /// Median over the timed steps.
    pub step_s: f64,
    pub images_per_s: f64,
    pub total_params: usize,
    /// Parameters whose gradient the step computes.
    pub trainable_params: usize,
    /// Gradient tensors the backward pass produced (one per trainable parameter tensor).
    pub gradient_tensors: usize,
    /// Peak resident memory during the steps above what was resident before them (Linux
    /// only): activations kept for backward, gradients, optimiser state.
    pub step_memory_bytes: Option<u64>,
    /// Peak resident memory of the process.
    pub peak_memory_bytes: Option<u64>,
    /// One image's forward through every stage and exit, in MACs.
    pub forward_macs_per_image: u64,
    /// The step's nominal floating-point work per image: the forward, the activations'
    /// gradients (as much again) and, in full fine-tuning, the weights' (as much again), at
    /// 2 flops per MAC. Images/s times this is the GFLOP/s docs/benchmarks.md puts beside the
    /// machine's gemm peak.
    pub nominal_flops_per_image: u64,
}

/// Makes every parameter trainable (full fine-tuning).
struct Unfreeze;

impl<B: Backend> ModuleMapper<B> for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// Times `config.steps` training steps of `model` on random `[batch, 3, size, size]` images.
pub fn bench_train_step<B: AutodiffBackend>(
    model: DmpoModel<B>,
    config: &StepBenchConfig,
    device: &B::Device,
) -> StepReport {
    let model = match config.tuning {
        Tuning::Frozen => model,
        Tuning::Full => model.map(&mut Unfreeze),
    };
    let counts = model.param_counts();
    let trainable_params = match config.tuning {
        Tuning::Frozen => counts.trainable,
        Tuning::Full => counts.total,
    };
    let side = image_side(&model);
    let classes = match model.heads.last() {
        Some(dmpo_model::dmpo::ExitHead::Linear(h)) => h.classifier.weight.dims()[1],
        _ => 2,
    };
    let exits = model.num_exits();
    let forward_macs_per_image: u64 = model.stage_costs().iter().map(|c| c.total()).sum();
    let passes = match config.tuning {
        Tuning::Frozen => 2,
        Tuning::Full => 3,
    };
    let mut trainee = Trainee {
        model,
        label_smoothing: 0.1,
        weight_decay: 0.05,
        distillation: crate::SelfDistillation::off(),
        dyt: crate::DytLoss::new(),
        guard: LossGuard::default(),
        sync: crate::GradientSync::none(),
    };
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let batch = || ExitBatch {
        images: Tensor::<B, 4>::random(
            [config.batch, 3, side, side],
            Distribution::Normal(0.0, 1.0),
            device,
        ),
        targets: Tensor::<B, 1, Int>::random(
            [config.batch],
            Distribution::Uniform(0.0, classes as f64),
            device,
        ),
        loss_weights: vec![1.0 / exits as f32; exits],
        ends_epoch: false,
        share: 1.0,
    };
    let memory = PeakMemory::start();
    let mut gradient_tensors = 0;
    let mut times = Vec::with_capacity(config.steps);
    for step in 0..config.warmup + config.steps {
        let input = batch();
        B::sync(device).expect("device sync");
        let start = Instant::now();
        let output = TrainStep::step(&trainee, input);
        gradient_tensors = output.grads.len();
        trainee = TrainStep::optimize(trainee, &mut optim, 1e-4, output.grads);
        B::sync(device).expect("device sync");
        if step >= config.warmup {
            times.push(start.elapsed().as_secs_f64());
        }
        tracing::debug!(step, seconds = start.elapsed().as_secs_f64(), "train step");
    }
    times.sort_by(f64::total_cmp);
    let step_s = times[times.len() / 2];
    let (step_memory_bytes, peak_memory_bytes) = memory.finish();
    StepReport {
        tuning: config.tuning,
        batch: config.batch,
        steps: config.steps,
        step_s,
        images_per_s: config.batch as f64 / step_s,
        total_params: counts.total,
        trainable_params,
        gradient_tensors,
        step_memory_bytes,
        peak_memory_bytes,
        forward_macs_per_image,
        nominal_flops_per_image: 2 * passes * forward_macs_per_image,
    }
}

/// The square input side the model's position embedding was made for.
fn image_side<B: Backend>(model: &DmpoModel<B>) -> usize {
    let grid = model.backbone.pos_embed.dims()[1] - model.backbone.num_prefix_tokens;
    let per_side = (grid as f64).sqrt().round() as usize;
    per_side * model.backbone.patch_embed.patch_size
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use dmpo_model::dmpo::DmpoConfig;
    use dmpo_model::vit::VitConfig;

    type AB = Autodiff<NdArray>;

    fn tiny_model() -> DmpoModel<AB> {
        let device = Default::default();
        let vit = VitConfig::tiny().init::<AB>(&device);
        DmpoConfig::new(5).init(vit, &device).unwrap()
    }

    fn run(tuning: Tuning) -> StepReport {
        let config = StepBenchConfig {
            batch: 2,
            warmup: 0,
            steps: 1,
            tuning,
        };
        bench_train_step(tiny_model(), &config, &Default::default())
    }

    #[test]
    fn a_frozen_step_computes_gradients_for_the_trainable_parts_only() {
        let model = tiny_model();
        // Adapters (2 × weight + bias per block), bypasses (norm 2, down 2, up 2), covariance
        // heads (norm 2, reduce 2, classifier 2), the last classifier (2).
        let trainable_tensors = model.adapters.len() * 4
            + model.bypasses.iter().flatten().count() * 6
            + (model.num_exits() - 1) * 6
            + 2;
        let frozen = run(Tuning::Frozen);
        assert_eq!(frozen.gradient_tensors, trainable_tensors, "{frozen:?}");
        assert_eq!(frozen.trainable_params, model.param_counts().trainable);
        let full = run(Tuning::Full);
        assert_eq!(full.trainable_params, full.total_params);
        assert!(
            full.gradient_tensors > frozen.gradient_tensors + 4 * 8,
            "full fine-tuning should add the blocks' gradients: {full:?}"
        );
    }
}
