//! Every kind of bad checkpoint gives a clear error naming the file and what is wrong, never a
//! panic: truncated files, files that are not checkpoints, missing / unexpected / misshapen
//! tensors, integer weights, and an architecture that contradicts the tensors.

use std::path::{Path, PathBuf};

use dmpo_import::{HostTensor, ImportError, ImportOptions, import_checkpoint, write_safetensors};
use dmpo_model::vit::VitConfig;
use dmpo_tests::formula::timm_state_dict;
use dmpo_tests::{TestBackend, fixture};

fn import(path: &Path) -> Result<(), ImportError> {
    import_opts(path, &ImportOptions::default())
}

fn import_opts(path: &Path, opts: &ImportOptions) -> Result<(), ImportError> {
    import_checkpoint::<TestBackend>(path, opts, &Default::default()).map(|_| ())
}

fn tiny() -> VitConfig {
    VitConfig::new()
        .with_img_size(16)
        .with_patch_size(8)
        .with_embed_dim(16)
        .with_depth(2)
        .with_num_heads(2)
        .with_mlp_hidden_dim(32)
        .with_num_classes(3)
}

fn write(dir: &Path, tensors: &[(String, HostTensor)]) -> PathBuf {
    let path = dir.join("model.safetensors");
    write_safetensors(&path, tensors).unwrap();
    path
}

/// The message a user sees, which must name the file.
fn message(err: ImportError, file: &Path) -> String {
    let msg = err.to_string();
    assert!(
        msg.contains(&file.display().to_string()),
        "no file name in: {msg}"
    );
    msg
}

#[test]
fn a_valid_tiny_checkpoint_imports() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &timm_state_dict(&tiny()));
    import(&path).unwrap();
}

#[test]
fn truncated_safetensors_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &timm_state_dict(&tiny()));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = import(&path).unwrap_err();
    assert!(matches!(err, ImportError::Corrupt { .. }), "{err:?}");
    assert!(message(err, &path).contains("corrupt or truncated"));
}

#[test]
fn truncated_pth_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pth");
    let bytes = std::fs::read(fixture("timm/vit_pico_cls.pth")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = import(&path).unwrap_err();
    assert!(matches!(err, ImportError::Corrupt { .. }), "{err:?}");
    message(err, &path);
}

#[test]
fn files_that_are_not_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.safetensors", &b""[..]),
        ("notes.pth", &b"just some text, not weights"[..]),
        ("image.safetensors", &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = import(&path).unwrap_err();
        assert!(
            matches!(err, ImportError::NotACheckpoint { .. }),
            "{name}: {err:?}"
        );
        message(err, &path);
    }
    let missing = dir.path().join("absent.safetensors");
    assert!(matches!(
        import(&missing).unwrap_err(),
        ImportError::Io { .. }
    ));
}

#[test]
fn a_missing_tensor_is_named_with_its_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = timm_state_dict(&tiny());
    tensors.retain(|(k, _)| k != "blocks.1.mlp.fc2.weight");
    let path = write(dir.path(), &tensors);
    let err = import(&path).unwrap_err();
    let msg = message(err, &path);
    assert!(
        msg.contains("`blocks.1.mlp.fc2.weight` is missing"),
        "{msg}"
    );
    assert!(msg.contains("[16, 32]"), "{msg}");
}

#[test]
fn a_wrongly_shaped_tensor_names_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = timm_state_dict(&tiny());
    for (k, t) in &mut tensors {
        if k == "blocks.0.attn.proj.weight" {
            *t = HostTensor::new(vec![16, 8], vec![0.0; 128]);
        }
    }
    let path = write(dir.path(), &tensors);
    let err = import(&path).unwrap_err();
    assert!(matches!(err, ImportError::ShapeMismatch { .. }), "{err:?}");
    let msg = message(err, &path);
    assert!(
        msg.contains("`blocks.0.attn.proj.weight` has shape [16, 8], expected [16, 16]"),
        "{msg}"
    );
}

#[test]
fn unexpected_tensors_are_listed_with_the_feature_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = timm_state_dict(&tiny());
    tensors.push((
        "norm_pre.weight".into(),
        HostTensor::new(vec![16], vec![1.0; 16]),
    ));
    let path = write(dir.path(), &tensors);
    let msg = message(import(&path).unwrap_err(), &path);
    assert!(
        msg.contains("norm_pre.weight") && msg.contains("a pre-norm before the blocks"),
        "{msg}"
    );
}

/// Register tokens whose count does not fit the position embedding (neither the patches alone
/// nor the patches after every prefix token).
#[test]
fn registers_that_do_not_fit_the_position_embedding_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = timm_state_dict(&tiny());
    tensors.push((
        "reg_token".into(),
        HostTensor::new(vec![1, 4, 16], vec![0.0; 64]),
    ));
    let path = write(dir.path(), &tensors);
    let msg = message(import(&path).unwrap_err(), &path);
    assert!(
        msg.contains("pos_embed holds 5 positions") && msg.contains("5 prefix token(s)"),
        "{msg}"
    );
}

#[test]
fn integer_weights_are_refused_and_half_precision_converts() {
    let dir = tempfile::tempdir().unwrap();
    // Rewrite one tensor as i32 and, in another file, every tensor as f16.
    let tensors = timm_state_dict(&tiny());
    let raw: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| {
            if k == "head.bias" {
                let b = t
                    .data
                    .iter()
                    .flat_map(|v| (*v as i32).to_le_bytes())
                    .collect();
                (k.clone(), safetensors::Dtype::I32, t.shape.clone(), b)
            } else {
                let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (k.clone(), safetensors::Dtype::F32, t.shape.clone(), b)
            }
        })
        .collect();
    let path = dir.path().join("int.safetensors");
    save_raw(&path, &raw);
    let err = import(&path).unwrap_err();
    assert!(
        matches!(err, ImportError::UnsupportedDtype { .. }),
        "{err:?}"
    );
    assert!(message(err, &path).contains("head.bias"));

    let half: Vec<_> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t
                .data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect();
            (k.clone(), safetensors::Dtype::F16, t.shape.clone(), b)
        })
        .collect();
    let path = dir.path().join("f16.safetensors");
    save_raw(&path, &half);
    import(&path).unwrap();
}

fn save_raw(path: &Path, tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, dt, s, b)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn forged_safetensors_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let forge = |name: &str, header: &str, body: usize| {
        let path = dir.path().join(name);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, body));
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let cases = [
        forge(
            "past_end.safetensors",
            r#"{"pos_embed":{"dtype":"F32","shape":[1,2,2],"data_offsets":[0,1600]}}"#,
            16,
        ),
        forge(
            "overlap.safetensors",
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ),
        forge(
            "huge.safetensors",
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
            16,
        ),
    ];
    for path in cases {
        let err = import(&path).unwrap_err();
        assert!(
            matches!(err, ImportError::Corrupt { .. }),
            "{}: {err:?}",
            path.display()
        );
    }
}

#[test]
fn an_architecture_that_contradicts_the_tensors_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), &timm_state_dict(&tiny()));
    let opts = ImportOptions {
        arch: Some("vit_small_patch16_224".into()),
        ..Default::default()
    };
    let msg = message(import_opts(&path, &opts).unwrap_err(), &path);
    assert!(
        msg.contains("embed_dim 384") && msg.contains("has 16"),
        "{msg}"
    );
    let opts = ImportOptions {
        num_heads: Some(3),
        ..Default::default()
    };
    let msg = message(import_opts(&path, &opts).unwrap_err(), &path);
    assert!(msg.contains("divisible by num_heads 3"), "{msg}");
}

fn hostile(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/hostile")
        .join(name)
}

#[test]
fn pickles_that_would_run_code_are_refused_without_running_it() {
    // Written by fixtures/hostile/make_hostile.py: unpickling them in Python runs
    // `touch MARKER`. Our reader interprets pickle opcodes itself and never calls anything.
    let marker = Path::new("/tmp/dmpo-burn-hostile-pickle-ran");
    let _ = std::fs::remove_file(marker);
    for name in ["exec_on_load.pth", "exec_on_load_legacy.pth"] {
        let path = hostile(name);
        let msg = message(import(&path).unwrap_err(), &path);
        // The refusal names the callable the file asked for.
        assert!(msg.contains("posix.system"), "{name}: {msg}");
        assert!(!marker.exists(), "{name}: the pickle's code ran");
    }
}

#[test]
fn pickles_that_are_not_state_dicts_are_refused() {
    for name in ["a_list.pth", "a_number.pth"] {
        let path = hostile(name);
        let msg = message(import(&path).unwrap_err(), &path);
        assert!(msg.contains("state_dict"), "{name}: {msg}");
    }
}
