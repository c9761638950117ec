//! The wgpu backend run for real against Flex (the CPU reference), on tiny shapes: the ViT,
//! every exit of a DMPO model, early exit's decisions, DyT's token skipping and one training
//! step (loss and every gradient). On a machine without a GPU, Mesa's software Vulkan driver
//! (lavapipe, Debian `mesa-vulkan-drivers`) runs it; `.ci/run` does.
//!
//! `cargo test -p dmpo-train --features wgpu --test wgpu_backend`. Without the feature this file
//! is empty, so the plain `cargo test` stays CPU-only and fast.
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use burn::backend::{Autodiff, Flex, Wgpu};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::activation::softmax;
use burn::tensor::backend::AutodiffBackend;
use dmpo_infer::data::{ImageRef, Sample};
use dmpo_infer::{Criterion, ExitPolicy, run_early_exit};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::vit::{VisionTransformer, VitConfig};
use dmpo_train::{EpochWeights, ExitBatcher, LossGuard, LossSchedule, SelfDistillation, Trainee};
use image::{DynamicImage, RgbImage};

/// Relative tolerance (of the reference's largest magnitude), as for timm parity.
const TOL: f32 = 1e-4;

/// Burn's wgpu device; fails with the driver's words when no adapter is there.
fn gpu() -> burn::backend::wgpu::WgpuDevice {
    burn::backend::wgpu::WgpuDevice::default()
}

/// Every float parameter gets deterministic, non-trivial values, whatever the random
/// initialisation drew (tests share the RNG): vectors around 1 (norm gains), matrices and
/// embeddings small, the zero-initialised adapter and bypass up-projections included.
struct Jitter(u32);

impl<B: Backend> ModuleMapper<B> for Jitter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.0 += 1;
        let salt = self.0;
        param.map(|t| {
            let shape = t.shape();
            let (offset, spread) = if D == 1 { (1.0, 0.1) } else { (0.0, 0.2) };
            let values: Vec<f32> = (0..shape.num_elements() as u32)
                .map(|i| {
                    let h = (i ^ salt.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761);
                    offset + spread * (((h >> 8) % 2001) as f32 / 1000.0 - 1.0)
                })
                .collect();
            let fresh = Tensor::<B, D>::from_data(TensorData::new(values, shape), &t.device());
            if t.is_require_grad() {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

/// The same module on another backend, through Burn's backend-independent record bytes.
fn transfer<M1, M2, B1, B2>(from: M1, to: M2, device: &B2::Device) -> M2
where
    B1: Backend,
    B2: Backend,
    M1: Module<B1>,
    M2: Module<B2>,
{
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = recorder.record(from.into_record(), ()).unwrap();
    to.load_record(recorder.load(bytes, device).unwrap())
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The largest magnitude in `v`.
fn largest(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The largest element-wise difference between `a` and `b`.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn assert_close(what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{what}: size");
    let scale = largest(reference).max(1e-12);
    let worst = max_diff(ours, reference);
    assert!(
        worst <= TOL * scale,
        "{what}: wgpu differs from flex by {worst:e} (largest magnitude {scale:e})"
    );
}

/// `[n, 3, 16, 16]` images, deterministic, each with its own contrast and colour cast (so the
/// exits' confidences differ from image to image).
fn images<B: Backend>(n: usize, device: &B::Device) -> Tensor<B, 4> {
    let per_image = 3 * 16 * 16;
    let values: Vec<f32> = (0..n * per_image)
        .map(|i| {
            let (image, rest) = (i / per_image, i % per_image);
            let channel = rest / 256;
            let noise = (i * 7919 % 1013) as f32 / 1013.0 - 0.5;
            let contrast = 0.5 + 0.4 * image as f32;
            let cast = ((image * 3 + channel) % 5) as f32 * 0.4 - 0.8;
            contrast * noise + cast
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [n, 3, 16, 16]), device)
}

fn dmpo<B: Backend>(device: &B::Device) -> DmpoModel<B> {
    dmpo_with::<B>(None, device)
}

/// [`dmpo`] with DyT's token dispatch, or without (`None`).
fn dmpo_with<B: Backend>(
    dispatch: Option<dmpo_model::dyt::DispatchConfig>,
    device: &B::Device,
) -> DmpoModel<B> {
    let vit = VitConfig::tiny().with_num_classes(0).init::<B>(device);
    DmpoConfig::new(3)
        .with_exits(vec![1, 2, 4])
        .with_dispatch(dispatch)
        .init(vit, device)
        .unwrap()
}

fn flex_and_wgpu_dmpo() -> (DmpoModel<Flex>, DmpoModel<Wgpu>) {
    let cpu = Default::default();
    let flex = dmpo::<Flex>(&cpu).map(&mut Jitter(0));
    let wgpu = transfer::<_, _, Flex, Wgpu>(flex.clone(), dmpo::<Wgpu>(&gpu()), &gpu());
    (flex, wgpu)
}

#[test]
fn vit_forward_matches_flex() {
    let cpu = Default::default();
    let config = VitConfig::tiny().with_num_classes(5);
    let flex: VisionTransformer<Flex> = config.init(&cpu).map(&mut Jitter(100));
    let wgpu: VisionTransformer<Wgpu> =
        transfer::<_, _, Flex, Wgpu>(flex.clone(), config.init(&gpu()), &gpu());
    assert_close(
        "ViT logits",
        &host(wgpu.forward(images(4, &gpu()))),
        &host(flex.forward(images(4, &cpu))),
    );
}

#[test]
fn every_dmpo_exit_matches_flex() {
    let (flex, wgpu) = flex_and_wgpu_dmpo();
    let on_cpu = flex.forward_exits(images(4, &Default::default()));
    let on_gpu = wgpu.forward_exits(images(4, &gpu()));
    assert_eq!(on_cpu.len(), 3);
    for (k, (g, c)) in on_gpu.into_iter().zip(on_cpu).enumerate() {
        assert_close(&format!("exit {} logits", k + 1), &host(g), &host(c));
    }
}

#[test]
fn early_exit_takes_the_same_exits_and_classes_as_on_flex() {
    let (flex, wgpu) = flex_and_wgpu_dmpo();
    let n = 12;
    let cpu = Default::default();
    // Thresholds in the widest gaps between the samples' confidences on Flex, so that a
    // difference of 1e-4 cannot move a sample across: about half leave at each early exit.
    let confidences = |k: usize| -> Vec<f32> {
        let logits = flex.forward_exits(images(n, &cpu)).swap_remove(k);
        let probs = host(softmax(logits, 1));
        probs
            .chunks(3)
            .map(|p| p.iter().cloned().fold(0.0, f32::max))
            .collect()
    };
    let split = |mut c: Vec<f32>| -> f32 {
        c.sort_by(f32::total_cmp);
        let (gap, at) = (n / 4..3 * n / 4)
            .map(|i| (c[i + 1] - c[i], i))
            .fold((0.0, 0), |best, g| if g.0 > best.0 { g } else { best });
        assert!(
            gap > 1e-3,
            "the scripted batch's confidences are spread out"
        );
        (c[at] + c[at + 1]) / 2.0
    };
    let policy = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![split(confidences(0)), split(confidences(1))],
    };
    let on_cpu = run_early_exit(&flex, images(n, &cpu), &policy).unwrap();
    let on_gpu = run_early_exit(&wgpu, images(n, &gpu()), &policy).unwrap();
    let route = |p: &[dmpo_infer::Prediction]| -> Vec<(usize, usize, u64)> {
        p.iter().map(|p| (p.exit, p.class, p.macs)).collect()
    };
    assert_eq!(route(&on_gpu), route(&on_cpu));
    let exits: std::collections::BTreeSet<usize> = on_cpu.iter().map(|p| p.exit).collect();
    assert!(
        exits.len() >= 2,
        "the batch leaves at several exits: {exits:?}"
    );
}

/// Every trainable parameter's gradient, flattened in visiting order.
fn gradients<B: AutodiffBackend>(
    model: &DmpoModel<B>,
    grads: &B::Gradients,
) -> Vec<(usize, Vec<f32>)> {
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a B::Gradients,
        out: Vec<(usize, Vec<f32>)>,
        index: usize,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.index += 1;
            if let Some(g) = param.val().grad(self.grads) {
                self.out.push((self.index, host(g)));
            }
        }
    }
    let mut c = Collect {
        grads,
        out: Vec::new(),
        index: 0,
    };
    model.visit(&mut c);
    c.out
}

/// One training step's loss and gradients on backend `B`, for the model `from` carries.
fn step<B: AutodiffBackend>(
    from: DmpoModel<Autodiff<Flex>>,
    device: &B::Device,
) -> (f32, Vec<(usize, Vec<f32>)>) {
    let model = transfer::<_, _, Autodiff<Flex>, B>(from, dmpo::<B>(device), device);
    let samples: Vec<Sample> = (0..6)
        .map(|i| {
            let img = RgbImage::from_fn(16, 16, |x, y| {
                let v = ((x * 13 + y * 7 + i * 29) % 256) as u8;
                image::Rgb([v, v / 2, 255 - v])
            });
            Sample {
                image: ImageRef::Memory(Arc::new(DynamicImage::ImageRgb8(img))),
                label: (i % 3) as usize,
            }
        })
        .collect();
    let refs: Vec<&Sample> = samples.iter().collect();
    let batcher = ExitBatcher {
        preprocess: Preprocess::new(16).with_crop_pct(1.0),
        augment: None,
        weights: EpochWeights::new(LossSchedule::new(), vec![1, 2, 4], 2),
        seed: 3,
    };
    let trainee = Trainee {
        model,
        label_smoothing: 0.1,
        weight_decay: 0.0,
        distillation: SelfDistillation::new().with_weight(0.5),
        dyt: dmpo_train::DytLoss::new(),
        guard: LossGuard::default(),
        sync: dmpo_train::GradientSync::none(),
    };
    let out = trainee.forward_loss(batcher.batch::<B>(&refs, 0, 0, 1, device));
    let loss = out.loss.clone().into_scalar().elem::<f32>();
    let grads = out.loss.backward();
    (loss, gradients(&trainee.model, &grads))
}

#[test]
fn a_training_step_gives_the_same_loss_and_gradients_as_on_flex() {
    let cpu = Default::default();
    let model = dmpo::<Autodiff<Flex>>(&cpu).map(&mut Jitter(200));
    let (cpu_loss, cpu_grads) = step::<Autodiff<Flex>>(model.clone(), &cpu);
    let (gpu_loss, gpu_grads) = step::<Autodiff<Wgpu>>(model, &gpu());
    assert!(
        (gpu_loss - cpu_loss).abs() <= TOL * cpu_loss.abs().max(1.0),
        "loss: wgpu {gpu_loss} vs flex {cpu_loss}"
    );
    assert!(!cpu_grads.is_empty());
    let ids = |g: &[(usize, Vec<f32>)]| g.iter().map(|(i, _)| *i).collect::<Vec<_>>();
    assert_eq!(
        ids(&gpu_grads),
        ids(&cpu_grads),
        "the same parameters get gradients"
    );
    // All gradients as one vector, within 1e-4 of its largest magnitude (as logits are
    // judged) ...
    let flat = |g: &[(usize, Vec<f32>)]| g.iter().flat_map(|(_, v)| v.clone()).collect::<Vec<_>>();
    assert_close("all gradients", &flat(&gpu_grads), &flat(&cpu_grads));
    // ... and each parameter's own within 1e-3 of its largest magnitude: the early blocks'
    // gradients pass back through every later block, the covariance heads' Newton–Schulz
    // iterations and attention, and fp32 sums in another order drift by up to ~7e-4 of them
    // (measured on lavapipe). Gradients 10⁴ times smaller than the largest (some vanish
    // analytically: a bias before a centring leaves ~1e-10 of float noise) are covered by the
    // check above only.
    let global = largest(&flat(&cpu_grads));
    for ((i, g), (_, c)) in gpu_grads.iter().zip(&cpu_grads) {
        let scale = largest(c);
        if scale <= 1e-4 * global {
            continue;
        }
        let worst = max_diff(g, c);
        assert!(
            worst <= 1e-3 * scale,
            "gradient of parameter #{i}: wgpu differs from flex by {worst:e} (largest {scale:e})"
        );
    }
}

/// DyT's token skipping on the GPU: the same tokens kept (the kept rows gathered, run through
/// the MLP, scattered back with wgpu's kernels) and the same exits' logits as on Flex.
#[test]
fn token_skipping_matches_flex() {
    use dmpo_model::dyt::{Dispatch, DispatchConfig};
    let cpu = Default::default();
    let n = 4;
    let mut flex = dmpo_with::<Flex>(Some(DispatchConfig::new()), &cpu).map(&mut Jitter(200));
    // Each dispatcher's bias in the widest gap between the middle of its logits on Flex, block
    // by block, so that about half the tokens are skipped and a 1e-4 difference cannot flip one.
    let mut x = flex.embed(images(n, &cpu));
    for i in 0..flex.dispatchers.len() {
        let h = flex.backbone.blocks[i].forward_attention_residual(x.clone());
        let d = &mut flex.dispatchers[i];
        let b = d.proj.bias.as_ref().unwrap().val();
        let mut z: Vec<f32> = host(d.logits(h) - b.unsqueeze::<2>());
        z.sort_by(f32::total_cmp);
        let m = z.len();
        let (gap, at) = (m / 4..3 * m / 4)
            .map(|j| (z[j + 1] - z[j], j))
            .fold((0.0, 0), |best, g| if g.0 > best.0 { g } else { best });
        assert!(gap > 1e-3, "block {i}: the logits are spread out");
        let bias = -(z[at] + z[at + 1]) / 2.0;
        d.proj.bias = Some(Param::from_tensor(Tensor::from_floats([bias], &cpu)));
        x = flex.forward_block_with(i, x, Dispatch::Hard).0;
    }
    let wgpu = transfer::<_, _, Flex, Wgpu>(
        flex.clone(),
        dmpo_with::<Wgpu>(Some(DispatchConfig::new()), &gpu()),
        &gpu(),
    );
    let (on_cpu, cpu_masks) = flex.forward_exits_with(images(n, &cpu), Dispatch::Hard);
    let (on_gpu, gpu_masks) = wgpu.forward_exits_with(images(n, &gpu()), Dispatch::Hard);
    let kept: f32 = cpu_masks
        .iter()
        .map(|m| host(m.clone()).iter().sum::<f32>())
        .sum();
    let total: usize = cpu_masks
        .iter()
        .map(|m| m.dims().iter().product::<usize>())
        .sum();
    assert!(
        kept > 0.2 * total as f32 && kept < 0.8 * total as f32,
        "{kept} of {total}"
    );
    for (i, (g, c)) in gpu_masks.into_iter().zip(cpu_masks).enumerate() {
        assert_eq!(host(g), host(c), "block {i}'s kept tokens");
    }
    for (k, (g, c)) in on_gpu.into_iter().zip(on_cpu).enumerate() {
        assert_close(&format!("exit {} logits", k + 1), &host(g), &host(c));
    }
}
