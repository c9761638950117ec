//! What the training tests share: a two-class image set and a tiny two-exit model.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::Backend;
use burn::tensor::backend::AutodiffBackend;
use dmpo_infer::data::{ImageDataset, ImageRef, Sample};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::vit::VitConfig;
use dmpo_train::{TrainConfig, TrainError};
use image::{DynamicImage, RgbImage};

/// Two classes told apart by a horizontal vs a vertical stripe, with varying brightness.
pub fn stripes(n: usize) -> ImageDataset {
    let samples = (0..n)
        .map(|i| {
            let label = i % 2;
            let level = 120 + (i * 37 % 100) as u8;
            let img = RgbImage::from_fn(16, 16, |x, y| {
                let on = if label == 0 {
                    (6..10).contains(&y)
                } else {
                    (6..10).contains(&x)
                };
                let v = if on { level } else { 30 };
                image::Rgb([v, v, v])
            });
            Sample {
                image: ImageRef::Memory(Arc::new(DynamicImage::ImageRgb8(img))),
                label,
            }
        })
        .collect();
    ImageDataset {
        samples,
        classes: vec!["horizontal".into(), "vertical".into()],
    }
}

/// A tiny two-exit DMPO model (16 px, patch 4, width 24, 4 blocks); the same weights for a seed.
///
/// The backends draw every random tensor from one process-wide generator and a test file's
/// tests run on parallel threads: whoever seeds it (`tiny_model`, and `dmpo_train::train` when
/// it starts) holds this lock for as long as the guard lives, so another test cannot reseed
/// the generator while a model's weights are drawn (a training run starting mid-draw changed
/// that model's weights).
pub fn backend_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `dmpo_train::train` holding [`backend_rng`]: it seeds the generator when it starts, so no
/// other test may draw from it meanwhile. Arguments are evaluated first, so a `tiny_model`
/// passed in is built, under the lock on its own, before this takes it.
#[allow(clippy::too_many_arguments)]
pub fn train_seeding<B: AutodiffBackend>(
    model: DmpoModel<B>,
    train_set: ImageDataset,
    valid_set: ImageDataset,
    preprocess: &Preprocess,
    config: &TrainConfig,
    artifact_dir: &Path,
    resume_epoch: Option<usize>,
    devices: &[B::Device],
) -> Result<DmpoModel<B::InnerBackend>, TrainError> {
    let _seeding = backend_rng();
    dmpo_train::train(
        model,
        train_set,
        valid_set,
        preprocess,
        config,
        artifact_dir,
        resume_epoch,
        devices,
    )
}

/// A tiny DMPO model whose seed alone sets its weights (see [`backend_rng`]).
pub fn tiny_model<B: Backend>(seed: u64) -> DmpoModel<B> {
    let _one_at_a_time = backend_rng();
    let device = Default::default();
    B::seed(&device, seed);
    let vit = VitConfig::tiny().with_num_classes(0).init::<B>(&device);
    DmpoConfig::new(2)
        .with_exits(vec![2, 4])
        .init(vit, &device)
        .unwrap()
}

pub fn preprocess() -> Preprocess {
    Preprocess::new(16).with_crop_pct(1.0)
}

/// Every parameter of a model, flattened in visiting order.
pub fn parameters<B: Backend>(m: &DmpoModel<B>) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<burn::prelude::Tensor<B, D>>) {
            self.0.extend(p.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}
