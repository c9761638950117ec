//! A few epochs of the real training loop (Burn's Learner, our steps and metrics) lower the loss
//! of a tiny multi-exit model, and only its add-ons change.

use burn::backend::{Autodiff, NdArray};
use burn::data::dataloader::DataLoader;
use dmpo_infer::data::ImageRef;
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoConfig;
use dmpo_model::dyt::DispatchConfig;
use dmpo_model::vit::VitConfig;
use dmpo_train::{
    EpochCounter, EpochLoader, EpochWeights, ExitBatch, ExitBatcher, LossGuard, LossSchedule,
    Split, TrainConfig, TrainError, Trainee,
};

mod common;
use common::{parameters, preprocess, stripes, train_seeding};

fn tiny_model(seed: u64) -> dmpo_model::dmpo::DmpoModel<B> {
    common::tiny_model::<B>(seed)
}

type B = Autodiff<NdArray>;

fn batcher(schedule: LossSchedule, epochs: usize, augment: bool) -> ExitBatcher {
    ExitBatcher {
        preprocess: preprocess(),
        augment: augment.then(Default::default),
        weights: EpochWeights::new(schedule, vec![2, 4], epochs),
        seed: 7,
    }
}

fn loader(split: Split, epochs: &EpochCounter, n: usize, augment: bool) -> EpochLoader<NdArray> {
    EpochLoader::new(
        stripes(n).samples,
        batcher(LossSchedule::new(), 4, augment),
        4,
        split,
        epochs.clone(),
        2,
        &Default::default(),
    )
}

#[test]
fn training_lowers_the_loss_and_leaves_the_backbone_alone() {
    let device = Default::default();
    let model = tiny_model(0);
    let preprocess = preprocess();
    let valid = stripes(32);
    let eval_batcher = batcher(LossSchedule::uniform(), 1, false);
    let refs: Vec<&dmpo_infer::data::Sample> = valid.samples.iter().collect();
    let batch = || eval_batcher.batch::<NdArray>(&refs, 0, 0, 1, &device);
    let loss_of = |m: &dmpo_model::dmpo::DmpoModel<NdArray>| {
        let t = Trainee {
            model: m.clone(),
            label_smoothing: 0.0,
            weight_decay: 0.0,
            distillation: dmpo_train::SelfDistillation::off(),
            dyt: dmpo_train::DytLoss::new(),
            guard: LossGuard::default(),
            sync: dmpo_train::GradientSync::none(),
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
    let trained = train_seeding(
        model,
        stripes(96),
        stripes(32),
        &preprocess,
        &config,
        dir.path(),
        None,
        std::slice::from_ref(&device),
    )
    .unwrap();
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
    let epochs = EpochCounter::new(0);
    let (train, valid) = (
        loader(Split::Train, &epochs, 8, false),
        loader(Split::Valid, &epochs, 8, false),
    );
    let weights_of = |l: &EpochLoader<NdArray>| -> Vec<Vec<f32>> {
        l.iter()
            .map(|b: ExitBatch<NdArray>| b.loss_weights)
            .collect()
    };
    // 4 epochs of the two-phase schedule: epochs 0-1 favour the deep exit, 2-3 are uniform.
    for epoch in 0..4 {
        let seen = weights_of(&train);
        assert_eq!(seen.len(), 2, "8 samples in batches of 4");
        let expected = if epoch < 2 { 1.0 / 3.0 } else { 0.5 };
        assert!(
            seen.iter().all(|w| (w[0] - expected).abs() < 1e-6),
            "epoch {epoch}: {seen:?}"
        );
        // Validation uses the epoch just trained without starting another.
        let v = weights_of(&valid);
        assert!(v.iter().all(|w| (w[0] - expected).abs() < 1e-6));
    }
    assert_eq!(epochs.started(), 4);
}

/// The pixels and labels of every batch of the loader's next epoch.
fn epoch_contents(l: &EpochLoader<NdArray>) -> Vec<(Vec<f32>, Vec<i64>)> {
    l.iter()
        .map(|b: ExitBatch<NdArray>| {
            (
                b.images.into_data().to_vec().unwrap(),
                b.targets.into_data().to_vec().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_epoch_is_the_same_whether_or_not_the_run_was_resumed() {
    // Uninterrupted: epochs 0, 1, 2 in a row.
    let fresh = loader(Split::Train, &EpochCounter::new(0), 24, true);
    let uninterrupted: Vec<_> = (0..3).map(|_| epoch_contents(&fresh)).collect();
    // Resumed after 2 epochs: a new loader whose first epoch is epoch 2.
    let resumed = loader(Split::Train, &EpochCounter::new(2), 24, true);
    assert_eq!(epoch_contents(&resumed), uninterrupted[2]);
    // Epochs differ from one another (the order is shuffled and the crops are random), and a
    // batch is made the same by one worker thread or several.
    assert_ne!(uninterrupted[0], uninterrupted[1]);
    let single = EpochLoader::new(
        stripes(24).samples,
        batcher(LossSchedule::new(), 4, true),
        4,
        Split::Train,
        EpochCounter::new(1),
        1,
        &Default::default(),
    );
    assert_eq!(epoch_contents(&single), uninterrupted[1]);
}

fn train_config(epochs: usize) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(epochs)
        .with_batch_size(16)
        .with_lr(5e-3)
        .with_num_workers(2)
}

#[test]
fn resuming_gives_the_same_model_as_an_uninterrupted_run() {
    let device = Default::default();
    let config = train_config(3);
    let whole = tempfile::tempdir().unwrap();
    let uninterrupted = train_seeding(
        tiny_model(0),
        stripes(64),
        stripes(16),
        &preprocess(),
        &config,
        whole.path(),
        None,
        std::slice::from_ref(&device),
    )
    .unwrap();

    // The same run stopped after epoch 2 leaves exactly that epoch's checkpoint: resume from
    // it in a fresh directory, with a fresh loader and a freshly built model.
    let resumed_dir = tempfile::tempdir().unwrap();
    let checkpoints = resumed_dir.path().join("checkpoint");
    std::fs::create_dir_all(&checkpoints).unwrap();
    for part in ["model", "optim", "scheduler"] {
        let name = format!("{part}-2.mpk");
        std::fs::copy(
            whole.path().join("checkpoint").join(&name),
            checkpoints.join(&name),
        )
        .unwrap();
    }
    let resumed = train_seeding(
        tiny_model(0),
        stripes(64),
        stripes(16),
        &preprocess(),
        &config,
        resumed_dir.path(),
        Some(2),
        std::slice::from_ref(&device),
    )
    .unwrap();
    let (a, b) = (parameters(&uninterrupted), parameters(&resumed));
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(differing, 0, "{differing} of {} parameters differ", a.len());
    // And training did change the add-ons (the comparison is not between two untouched models).
    assert_ne!(
        a,
        parameters(&burn::module::AutodiffModule::valid(&tiny_model(0)))
    );
}

#[test]
fn data_parallel_training_equals_one_device_on_the_same_global_batch() {
    // Two workers on the one CPU device exercise everything data-parallel training adds
    // (sharded loaders, loss shares, gradients summed on the first device); GPU backends only
    // change where the workers run. 59 images in global batches of 16: the last step has 11,
    // split 5 + 6, so unequal shares are covered too.
    let device: burn::tensor::Device<B> = Default::default();
    let run = |devices: &[burn::tensor::Device<B>]| {
        let dir = tempfile::tempdir().unwrap();
        let model = train_seeding(
            tiny_model(0),
            stripes(59),
            stripes(16),
            &preprocess(),
            &train_config(2),
            dir.path(),
            None,
            devices,
        )
        .unwrap();
        (
            parameters(&model),
            dmpo_train::read_epoch_metrics(dir.path()),
        )
    };
    let (one, one_metrics) = run(std::slice::from_ref(&device));
    let (two, two_metrics) = run(&[device, device]);
    let worst = one
        .iter()
        .zip(&two)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "weights differ by up to {worst}");
    for split in ["train", "valid"] {
        for epoch in 1..=2 {
            let key = (split.to_string(), epoch, "Loss".to_string());
            let (a, b) = (one_metrics[&key], two_metrics[&key]);
            assert!(
                (a - b).abs() < 1e-4,
                "{split} loss of epoch {epoch}: {a} vs {b}"
            );
        }
    }
    // The batch must split evenly between the devices.
    let dir = tempfile::tempdir().unwrap();
    let uneven = train_seeding(
        tiny_model(0),
        stripes(59),
        stripes(16),
        &preprocess(),
        &train_config(1).with_batch_size(15),
        dir.path(),
        None,
        &[device, device],
    );
    let message = uneven.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("--batch 15"), "{message}");
}

#[test]
fn resuming_from_a_checkpoint_of_another_model_is_one_clear_error() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let run = |model, resume| {
        train_seeding(
            model,
            stripes(32),
            stripes(16),
            &preprocess(),
            &train_config(1),
            dir.path(),
            resume,
            std::slice::from_ref(&device),
        )
    };
    run(tiny_model(0), None).unwrap();
    let other = |config: DmpoConfig| {
        // Drawn from the backend's generator: not while another test seeds or draws.
        let _one_at_a_time = common::backend_rng();
        let vit = VitConfig::tiny().with_num_classes(0).init::<B>(&device);
        config.init(vit, &device).unwrap()
    };
    // Another exit set (a list of another length: Burn's loader would assert), another method
    // (DyT adds dispatchers), another head width (same lists, other shapes: Burn would load it).
    let cases = [
        (DmpoConfig::new(2).with_exits(vec![1, 2, 4]), "lengths"),
        (
            DmpoConfig::new(2)
                .with_exits(vec![2, 4])
                .with_dispatch(Some(DispatchConfig::new())),
            "lengths",
        ),
        (DmpoConfig::new(3).with_exits(vec![2, 4]), "shape"),
    ];
    for (config, why) in cases {
        let message = match run(other(config), Some(1)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("resumed a checkpoint of another model"),
        };
        assert!(message.contains("model-1.mpk"), "{message}");
        assert!(message.contains(why), "{message}");
        assert!(message.contains("without --resume"), "{message}");
    }
    // The checkpoint of the same model still resumes.
    run(tiny_model(0), Some(1)).unwrap();
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    non_finite_loss_never_reaches_a_checkpoint(1);
}

/// As a GPU run does it: the losses are read back only every 1,000 steps, far more than an
/// epoch has, so only the read at the epoch's last step stands between a NaN and a checkpoint.
#[test]
fn a_guard_reading_rarely_still_keeps_nan_out_of_checkpoints() {
    non_finite_loss_never_reaches_a_checkpoint(1000);
}

fn non_finite_loss_never_reaches_a_checkpoint(check_every: usize) {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let run = |preprocess: &Preprocess, epochs: usize, resume: Option<usize>| {
        train_seeding(
            tiny_model(0),
            stripes(32),
            stripes(8),
            preprocess,
            &train_config(epochs).with_loss_check_every(check_every),
            dir.path(),
            resume,
            std::slice::from_ref(&device),
        )
    };
    run(&preprocess(), 1, None).unwrap();
    let good = dir.path().join("checkpoint/model-1.mpk");
    let before = std::fs::read(&good).unwrap();

    // Epoch 2 with a normalisation that divides by zero: every loss is NaN.
    let poisoned = preprocess().with_std([0.0; 3]);
    let err = run(&poisoned, 2, Some(1)).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, TrainError::NonFiniteLoss { epoch: 2, .. }),
        "{message}"
    );
    assert!(
        message.contains("NaN") || message.contains("inf"),
        "{message}"
    );
    assert!(message.contains("checkpoint of epoch 1"), "{message}");
    assert_eq!(
        std::fs::read(&good).unwrap(),
        before,
        "the good checkpoint was touched"
    );
    assert!(!dir.path().join("checkpoint/model-2.mpk").exists());
}

#[test]
fn an_unreadable_image_is_skipped_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let mut samples = stripes(7).samples;
    samples.insert(
        3,
        dmpo_infer::data::Sample {
            image: ImageRef::File(broken),
            label: 1,
        },
    );
    let refs: Vec<&dmpo_infer::data::Sample> = samples.iter().collect();
    let batch =
        batcher(LossSchedule::new(), 4, true).batch::<NdArray>(&refs, 0, 0, 2, &Default::default());
    assert_eq!(batch.images.dims(), [7, 3, 16, 16]);
    let labels: Vec<i64> = batch.targets.into_data().to_vec().unwrap();
    assert_eq!(
        labels,
        vec![0, 1, 0, 1, 0, 1, 0],
        "the others keep their order"
    );
}

#[test]
fn self_distillation_changes_the_early_exits_losses_only() {
    let device = Default::default();
    let model = burn::module::AutodiffModule::valid(&tiny_model(0));
    let valid = stripes(32);
    let eval_batcher = batcher(LossSchedule::uniform(), 1, false);
    let refs: Vec<&dmpo_infer::data::Sample> = valid.samples.iter().collect();
    let losses = |distillation: dmpo_train::SelfDistillation| -> Vec<f32> {
        let t = Trainee {
            model: model.clone(),
            label_smoothing: 0.0,
            weight_decay: 0.0,
            distillation,
            dyt: dmpo_train::DytLoss::new(),
            guard: LossGuard::default(),
            sync: dmpo_train::GradientSync::none(),
        };
        let out = t.forward_loss(eval_batcher.batch::<NdArray>(&refs, 0, 0, 1, &device));
        out.exit_losses
            .into_iter()
            .map(|l| l.into_scalar())
            .collect()
    };
    let plain = losses(dmpo_train::SelfDistillation::off());
    let distilled = losses(dmpo_train::SelfDistillation::new().with_weight(0.5));
    let last = plain.len() - 1;
    assert!(last >= 1, "the tiny model has early exits");
    assert_eq!(plain[last], distilled[last], "the last exit keeps plain CE");
    for k in 0..last {
        assert_ne!(plain[k], distilled[k], "exit {k} is distilled");
    }
}
