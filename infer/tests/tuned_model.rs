//! The embedding API: a model folder loads from its files or from their bytes alike, images of
//! any size and channel count become the model's input, and bad input (a policy for another
//! model, pixels that do not fit, images of the wrong shape) is an error, never a panic.

use std::path::Path;

use burn::backend::NdArray;
use burn::prelude::*;
use dmpo_import::{TrainedBinding, load_backbone, save_backbone, save_trained};
use dmpo_infer::image::{DynamicImage, GrayImage, RgbaImage};
use dmpo_infer::{
    BACKBONE_DIR, Criterion, ExitPolicy, InferError, MODEL_FILE, ModelBytes, ModelInfo,
    TRAINED_FILE, TunedModel, image_from_pixels, run_early_exit, write_model_info,
};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoConfig;
use dmpo_model::vit::VitConfig;

type B = NdArray;

/// A tiny DMPO model (exits after blocks 2 and 4) saved as a model folder with a policy that
/// lets confident samples leave at the first exit.
fn model_folder(dir: &Path) {
    let device = Default::default();
    let vit = VitConfig::tiny();
    let preprocess = Preprocess::new(vit.img_size).with_crop_pct(1.0);
    save_backbone(
        &dir.join(BACKBONE_DIR),
        &vit,
        &preprocess,
        vit.init::<B>(&device),
        "test",
    )
    .unwrap();
    // Read back: Burn initialises parameters lazily, so a clone of a fresh model would draw
    // its own weights when first read.
    let (info, backbone) = load_backbone::<B>(&dir.join(BACKBONE_DIR), &device).unwrap();
    let dmpo = DmpoConfig::new(5).with_exits(vec![2, 4]);
    let model = dmpo.init(backbone, &device).unwrap();
    let binding = TrainedBinding::new(&dmpo, &info.vit, &model);
    save_trained(&dir.join(TRAINED_FILE), &model, &binding).unwrap();
    let mut model_info = ModelInfo::new(dmpo, preprocess, (0..5).map(|c| c.to_string()).collect());
    model_info.policy = Some(ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.3],
    });
    model_info.budget_fraction = Some(0.5);
    write_model_info(dir, &model_info).unwrap();
}

fn images() -> Vec<DynamicImage> {
    vec![
        DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| {
            dmpo_infer::image::Luma([(x * 9 + y) as u8])
        })),
        DynamicImage::ImageRgba8(RgbaImage::from_fn(50, 20, |x, y| {
            dmpo_infer::image::Rgba([x as u8 * 5, y as u8 * 12, 40, 255])
        })),
    ]
}

#[test]
fn a_model_from_bytes_answers_as_the_one_from_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    model_folder(dir.path());
    let device = Default::default();
    let from_dir = TunedModel::<B>::load(dir.path(), &device).unwrap();
    let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
    let (json, config, weights, trained) = (
        read(MODEL_FILE),
        read("backbone/config.json"),
        read("backbone/model.bpk"),
        read(TRAINED_FILE),
    );
    let bytes = ModelBytes {
        model_json: &json,
        backbone_config: &config,
        backbone_weights: &weights,
        trained: &trained,
    };
    let from_bytes = TunedModel::<B>::from_bytes(bytes, &device).unwrap();
    let (a, b) = (
        from_dir.classify(&images()).unwrap(),
        from_bytes.classify(&images()).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert!(a.iter().all(|p| p.exit < 2 && p.class < 5 && p.macs > 0));

    // Corrupt bytes are an error naming the embedded file, not a panic.
    let broken = ModelBytes {
        backbone_weights: &weights[..weights.len() / 2],
        ..bytes
    };
    let err = TunedModel::<B>::from_bytes(broken, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("<embedded model>/backbone/model.bpk"), "{err}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    model_folder(dir.path());
    let device = Default::default();
    let model = TunedModel::<B>::load(dir.path(), &device).unwrap();

    // A policy for a model with three exits.
    let other = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.5, 0.5],
    };
    let err = model.classify_with(&images(), &other).unwrap_err();
    assert!(matches!(err, InferError::Policy(_)), "{err}");
    // A threshold outside [0, 1], a NaN one.
    for t in [1.5, f32::NAN] {
        let bad = ExitPolicy {
            criterion: Criterion::MaxProb,
            thresholds: vec![t],
        };
        assert!(matches!(
            model.classify_with(&images(), &bad),
            Err(InferError::Policy(_))
        ));
    }
    // Images of the wrong size or channel count, as a tensor.
    let policy = model.policy().unwrap().clone();
    for shape in [[1, 3, 32, 32], [1, 1, 16, 16], [1, 3, 16, 15]] {
        let x = Tensor::<B, 4>::zeros(shape, &device);
        let err = run_early_exit(&model.model, x, &policy).unwrap_err();
        assert!(matches!(err, InferError::Input { .. }), "{shape:?}: {err}");
        assert!(err.to_string().contains("[batch ≥ 1, 3, 16, 16]"), "{err}");
    }
    // No image at all.
    assert!(model.classify(&[]).is_err());
    // Raw pixels: the right length for the channels, 1 to 4 channels.
    let grey = image_from_pixels(vec![7; 6 * 4], 6, 4, 1).unwrap();
    assert_eq!(model.classify(&[grey]).unwrap().len(), 1);
    for (len, channels) in [(6 * 4 * 3 - 1, 3), (6 * 4 * 5, 5), (0, 1)] {
        let err = image_from_pixels(vec![0; len], 6, 4, channels).unwrap_err();
        assert!(matches!(err, InferError::Input { .. }), "{err}");
    }
}
