//! `dmpo infer` on files and folders: every readable image classified and printed, every
//! unreadable one named, and the exit status failing when any input could not be read.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{pico_command, write_idx};

/// A model folder trained for one epoch on bars (the pico backbone, two exits).
fn tiny_model(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    write_idx(&data, "train", 100, None);
    write_idx(&data, "t10k", 20, None);
    let out = dir.join("model");
    let output = pico_command("train", &data, &out)
        .args(["--epochs", "1", "--batch", "32", "--workers", "1"])
        .args(["--budgets", "0.9", "--budget", "0.9", "--no-augment"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn infer(model: &Path, paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .arg("infer")
        .arg("--model")
        .arg(model)
        .args(paths)
        .output()
        .unwrap()
}

#[test]
fn a_mixed_folder_prints_the_good_images_names_the_bad_ones_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let good = dmpo_infer::image::RgbImage::from_fn(40, 30, |x, y| {
        dmpo_infer::image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    });
    good.save(images.join("a_good.png")).unwrap();
    let bytes = std::fs::read(images.join("a_good.png")).unwrap();
    std::fs::write(images.join("b_truncated.png"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(images.join("c_text.png"), "not an image at all").unwrap();
    // A JPEG header and nothing after it.
    std::fs::write(images.join("d_header.jpg"), [0xFF, 0xD8, 0xFF, 0xE0]).unwrap();

    let output = infer(&model, &[&images]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains("a_good.png"), "{stdout}");
    for bad in ["b_truncated.png", "c_text.png", "d_header.jpg"] {
        assert!(stderr.contains(bad), "{bad} not named: {stderr}");
    }
    assert!(
        stderr.contains("3 of 4 files could not be read"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The good image alone: success.
    let output = infer(&model, &[&images.join("a_good.png")]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn an_empty_folder_or_a_missing_path_fails() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let output = infer(&model, &[&empty]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no files to classify"), "{stderr}");

    let output = infer(&model, &[&dir.path().join("nowhere")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nowhere") && stderr.contains("no such file"),
        "{stderr}"
    );
}

/// `bench` times full depth and a budget over the same images and ends with one JSON line whose
/// figures hang together: full depth is the reference, percentiles in order. (A budget near 1
/// may cost more MACs than full depth: its images pass exit heads that full depth skips.)
#[test]
fn bench_reports_full_depth_and_each_budget_as_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .arg("bench")
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(dir.path().join("data"))
        .args([
            "--budgets",
            "0.9",
            "--passes",
            "2",
            "--images",
            "16",
            "--batch",
            "8",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).unwrap();
    assert_eq!(line["images"], 16, "{line}");
    let policies = line["policies"].as_array().unwrap();
    assert_eq!(policies[0]["name"], "full", "{line}");
    assert_eq!(policies[0]["macs_speedup"], 1.0, "{line}");
    assert_eq!(policies[0]["time_speedup"], 1.0, "{line}");
    for p in policies {
        let f = |k: &str| p[k].as_f64().unwrap();
        assert!(f("images_per_s") > 0.0, "{p}");
        assert!(
            f("p50_ms") <= f("p95_ms") && f("p95_ms") <= f("p99_ms"),
            "{p}"
        );
        assert!(f("macs_speedup") > 0.0 && f("time_speedup") > 0.0, "{p}");
    }
}
