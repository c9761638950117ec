//! A converted model directory round-trips exactly, and a damaged one is a clear error.

use burn::prelude::*;
use dmpo_import::{ImportOptions, import_checkpoint, load_backbone, save_backbone};
use dmpo_tests::{TestBackend, fixture, host};

#[test]
fn save_then_load_gives_identical_logits_and_a_weight_hash() {
    let device = Default::default();
    let opts = ImportOptions {
        num_heads: Some(3),
        ..Default::default()
    };
    let src = fixture("timm/vit_pico_gap.pth");
    let imported = import_checkpoint::<TestBackend>(&src, &opts, &device).unwrap();
    let x = Tensor::<TestBackend, 4>::random(
        [2, 3, 32, 32],
        burn::tensor::Distribution::Default,
        &device,
    );
    let before = host(imported.model.forward(x.clone()));
    let dir = tempfile::tempdir().unwrap();
    let info = save_backbone(
        dir.path(),
        &imported.config,
        &imported.preprocess,
        imported.model,
        "pico",
    )
    .unwrap();
    assert_eq!(info.weights_sha256.len(), 64);
    let (loaded_info, model) = load_backbone::<TestBackend>(dir.path(), &device).unwrap();
    assert_eq!(loaded_info, info);
    assert_eq!(host(model.forward(x)), before);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn damaged_model_directories_are_clear_errors() {
    let device = Default::default();
    let opts = ImportOptions {
        num_heads: Some(3),
        ..Default::default()
    };
    let imported =
        import_checkpoint::<TestBackend>(&fixture("timm/vit_pico_cls.safetensors"), &opts, &device)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_backbone(
        dir.path(),
        &imported.config,
        &imported.preprocess,
        imported.model,
        "pico",
    )
    .unwrap();

    let config = dir.path().join("config.json");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("\"depth\": 4", "\"depth\": 5")).unwrap();
    let err = load_backbone::<TestBackend>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.bpk"), "{err}");

    std::fs::write(
        &config,
        good.replace("\"format\"", "\"colour\": 1, \"format\""),
    )
    .unwrap();
    let err = load_backbone::<TestBackend>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("unknown field"),
        "{err}"
    );

    std::fs::write(&config, &good).unwrap();
    let weights = dir.path().join("model.bpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_backbone::<TestBackend>(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.bpk"), "{err}");
}
