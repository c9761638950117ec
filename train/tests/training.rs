//! A few epochs of the real training loop (Burn's Learner, our steps and metrics) lower the loss
//! of a tiny multi-exit model, and only its add-ons change.

use std::sync::Arc;

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::batcher::Batcher;
use dmpo_infer::data::{ImageDataset, ImageRef, Sample};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoConfig;
use dmpo_model::vit::VitConfig;
use dmpo_train::{EpochClock, ExitBatcher, LossSchedule, TrainConfig, Trainee};
use image::{DynamicImage, RgbImage};

type B = Autodiff<NdArray>;

/// Two classes told apart by a horizontal vs a vertical stripe, with varying brightness.
fn stripes(n: usize) -> ImageDataset {
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

#[test]
fn training_lowers_the_loss_and_leaves_the_backbone_alone() {
    let device = Default::default();
    let vit = VitConfig::new()
        .with_img_size(16)
        .with_patch_size(4)
        .with_embed_dim(24)
        .with_depth(4)
        .with_num_heads(2)
        .with_mlp_hidden_dim(48)
        .with_num_classes(0)
        .init::<B>(&device);
    let model = DmpoConfig::new(2)
        .with_exits(vec![2, 4])
        .init(vit, &device)
        .unwrap();
    let preprocess = Preprocess::new(16).with_crop_pct(1.0);
    let valid = stripes(32);
    let eval_batcher = ExitBatcher {
        preprocess: preprocess.clone(),
        train: false,
        augment: None,
        clock: EpochClock::new(LossSchedule::uniform(), vec![2, 4], 1, 1, 0),
        seed: 0,
    };
    let batch = || Batcher::<NdArray, _, _>::batch(&eval_batcher, valid.samples.clone(), &device);
    let loss_of = |m: &dmpo_model::dmpo::DmpoModel<NdArray>| {
        let t = Trainee {
            model: m.clone(),
            label_smoothing: 0.0,
            weight_decay: 0.0,
        };
        t.forward_loss(batch()).loss.into_scalar()
    };
    let before_model = burn::module::AutodiffModule::valid(&model);
    let before = loss_of(&before_model);

    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig::new()
        .with_epochs(6)
        .with_batch_size(16)
        .with_lr(5e-3)
        .with_num_workers(1)
        .with_augment(false);
    let trained = dmpo_train::train(
        model,
        stripes(96),
        stripes(32),
        &preprocess,
        &config,
        dir.path(),
        None,
        &device,
    );
    let after = loss_of(&trained);
    assert!(after < 0.7 * before, "loss {before} -> {after}");

    let frozen = |m: &dmpo_model::dmpo::DmpoModel<NdArray>| -> Vec<f32> {
        m.backbone.blocks[1]
            .mlp
            .fc1
            .weight
            .val()
            .into_data()
            .to_vec()
            .unwrap()
    };
    assert_eq!(frozen(&before_model), frozen(&trained));
    // Checkpoints of every epoch were written.
    assert!(dir.path().join("checkpoint").is_dir());
}

#[test]
fn training_batches_carry_the_weights_of_their_epoch() {
    let device = Default::default();
    let clock = EpochClock::new(LossSchedule::new(), vec![2, 4], 4, 3, 0);
    let make = |train: bool| ExitBatcher {
        preprocess: Preprocess::new(16).with_crop_pct(1.0),
        train,
        augment: None,
        clock: clock.clone(),
        seed: 0,
    };
    let (train, valid) = (make(true), make(false));
    let items = stripes(2).samples;
    let mut seen = Vec::new();
    for _ in 0..12 {
        let b: dmpo_train::ExitBatch<NdArray> = train.batch(items.clone(), &device);
        seen.push(b.loss_weights);
    }
    // Epochs 0-1 (batches 0-5) favour the deep exit, epochs 2-3 are uniform.
    assert!(seen[..6].iter().all(|w| (w[0] - 1.0 / 3.0).abs() < 1e-6));
    assert!(
        seen[6..].iter().all(|w| (w[0] - 0.5).abs() < 1e-6),
        "{seen:?}"
    );
    // Validation uses the current epoch's weights without advancing the clock.
    let v: dmpo_train::ExitBatch<NdArray> = valid.batch(items, &device);
    assert!((v.loss_weights[0] - 0.5).abs() < 1e-6);
    assert_eq!(clock.epoch(), 3);
}
