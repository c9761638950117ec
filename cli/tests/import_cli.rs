//! The user's path through the command line: `import` a timm checkpoint, then `forward` the
//! converted directory on timm's own input and compare with timm's own outputs.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/timm")
        .join(name)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn import_then_forward_reproduces_timm() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("pico");
    let weights = fixture("vit_pico_cls.pth");
    let io = fixture("vit_pico_cls.io.safetensors");
    let out = run(&[
        "import",
        "--weights",
        weights.to_str().unwrap(),
        "--heads",
        "3",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out_dir.join("config.json").is_file() && out_dir.join("model.bpk").is_file());

    let result = dir.path().join("out.safetensors");
    let out = run(&[
        "forward",
        "--weights",
        out_dir.to_str().unwrap(),
        "--input",
        io.to_str().unwrap(),
        "--output",
        result.to_str().unwrap(),
        "--all",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = dmpo_import::read_tensor_file(&result).unwrap().tensors;
    let theirs = dmpo_import::read_tensor_file(&io).unwrap().tensors;
    for key in ["logits", "features", "block0", "block3"] {
        let (a, b) = (&ours[key], &theirs[key]);
        assert_eq!(a.shape, b.shape, "{key}");
        let scale = b.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .data
            .iter()
            .zip(&b.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-4 * scale, "{key}: {worst}");
    }
    assert_eq!(ours["pre_logits"].shape, vec![2, 48]);
}

#[test]
fn a_bad_input_file_is_a_one_line_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let weights = fixture("vit_pico_cls.safetensors");
    let bogus = dir.path().join("input.safetensors");
    std::fs::write(&bogus, b"not a tensor file").unwrap();
    let out = run(&[
        "forward",
        "--weights",
        weights.to_str().unwrap(),
        "--heads",
        "3",
        "--input",
        bogus.to_str().unwrap(),
        "--output",
        dir.path().join("o.safetensors").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("input.safetensors") && stderr.contains("not a checkpoint"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
