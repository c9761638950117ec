//! `dmpo-train pretrain --data`: a backbone pretrained from scratch on a labelled dataset, with a
//! tuning set's images held apart, resumable, and refusing bad datasets with one clear line.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::write_idx;

/// A short pretraining (`epochs`) of the demo architecture on `data`, holding `exclude` apart.
fn pretrain(data: &Path, exclude: &Path, work: &Path, out: &Path, epochs: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dmpo"));
    cmd.arg("pretrain")
        .arg("--data")
        .arg(data)
        .arg("--exclude")
        .arg(exclude)
        .arg("--work")
        .arg(work)
        .arg("--out")
        .arg(out)
        .args(["--epochs", epochs, "--batch", "32", "--valid-images", "26"])
        .args(["--workers", "2"]);
    cmd
}

fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stderr}");
    stderr
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn pretraining_holds_the_tuning_images_apart_and_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (data, demo) = (dir.path().join("data"), dir.path().join("demo"));
    write_idx(&data, "train", 150, None);
    write_idx(&data, "t10k", 30, None);
    // The "demo subset": the first 20 training images (and 5 test images, never in training).
    write_idx(&demo, "train", 20, None);
    write_idx(&demo, "t10k", 5, None);

    let (work, out) = (dir.path().join("work"), dir.path().join("backbone"));
    ok(pretrain(&data, &demo, &work, &out, "2").output().unwrap());
    let result = json(&out.join("pretrain-result.json"));
    assert_eq!(result["held_apart_images"], 20, "{result}");
    assert_eq!(result["train_images"], 150 - 20 - 26, "{result}");
    assert_eq!(result["valid_images"], 26, "{result}");
    assert_eq!(result["test_images"], 30, "{result}");
    // Accuracies measured on those very splits: a whole number of its images right.
    for (key, images) in [("test_accuracy", 30.0), ("valid_accuracy", 26.0)] {
        let acc = result[key].as_f64().unwrap();
        let right = acc * images;
        assert!(
            (0.0..=1.0).contains(&acc) && (right - right.round()).abs() < 1e-6,
            "{key} {acc} is not a share of {images} images"
        );
    }
    let recipe = json(&out.join("pretrain.json"));
    assert_eq!(recipe["vit"]["num_classes"], 10);
    assert_eq!(recipe["train"]["epochs"], 2);
    // The backbone loads as any other.
    let config = json(&out.join("config.json"));
    assert!(config["source"].as_str().unwrap().contains("held-apart"));

    // The same run interrupted after epoch 1: its work folder without epoch 2's checkpoint.
    let resumed_work = dir.path().join("resumed-work");
    copy_dir(&work, &resumed_work);
    for part in ["model", "optim", "scheduler"] {
        std::fs::remove_file(resumed_work.join(format!("training/checkpoint/{part}-2.mpk")))
            .unwrap();
    }
    let resumed_out = dir.path().join("resumed-backbone");
    let stderr = ok(pretrain(&data, &demo, &resumed_work, &resumed_out, "2")
        .arg("--resume")
        .output()
        .unwrap());
    assert!(
        stderr.contains("resuming pretraining after epoch 1"),
        "{stderr}"
    );
    assert_eq!(
        json(&resumed_out.join("config.json"))["weights_sha256"],
        config["weights_sha256"],
        "resumed pretraining ended with other weights than the uninterrupted run"
    );

    // A second stage: the pretrained backbone trained further, from its own weights.
    let (work2, out2) = (dir.path().join("work2"), dir.path().join("stage2"));
    ok(pretrain(&data, &demo, &work2, &out2, "1")
        .arg("--init")
        .arg(&out)
        .args(["--lr", "1e-4", "--warmup-epochs", "0"])
        .output()
        .unwrap());
    let recipe2 = json(&out2.join("pretrain.json"));
    assert_eq!(recipe2["init"], out.display().to_string());
    assert_eq!(recipe2["train"]["warmup_epochs"], 0);
    let config2 = json(&out2.join("config.json"));
    assert_ne!(config2["weights_sha256"], config["weights_sha256"]);
    assert!(
        config2["source"]
            .as_str()
            .unwrap()
            .contains(&format!("from {}", out.display()))
    );
}

#[test]
fn deep_supervision_trains_auxiliary_exits_and_ships_a_plain_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let (data, demo) = (dir.path().join("data"), dir.path().join("demo"));
    write_idx(&data, "train", 120, None);
    write_idx(&data, "t10k", 20, None);
    write_idx(&demo, "train", 10, None);
    write_idx(&demo, "t10k", 5, None);
    let (work, out) = (dir.path().join("work"), dir.path().join("backbone"));
    let stderr = ok(pretrain(&data, &demo, &work, &out, "1")
        .args(["--aux-exits", "1,3"])
        .output()
        .unwrap());
    // Every exit is trained and reported: the two auxiliary heads and the backbone's own.
    assert!(stderr.contains("Loss exit 3"), "{stderr}");
    assert_eq!(
        json(&out.join("pretrain.json"))["aux_exits"],
        serde_json::json!([1, 3])
    );
    // The backbone is a plain ViT: the auxiliary heads are not part of it.
    let plain = dir.path().join("plain");
    ok(
        pretrain(&data, &demo, &dir.path().join("work-plain"), &plain, "1")
            .output()
            .unwrap(),
    );
    let size = |d: &Path| std::fs::metadata(d.join("model.bpk")).unwrap().len();
    assert_eq!(size(&out), size(&plain));

    // A block that cannot take an auxiliary exit (the last, which has the head) is refused.
    let output = pretrain(
        &data,
        &demo,
        &dir.path().join("work-bad"),
        &dir.path().join("bad"),
        "1",
    )
    .args(["--aux-exits", "6"])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("auxiliary exits [6]") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!dir.path().join("bad").exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs pretraining on `data` and returns its stderr, which must be an error.
fn refused(data: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .arg("pretrain")
        .arg("--data")
        .arg(data)
        .arg("--work")
        .arg(dir.path().join("work"))
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "accepted: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("out").exists(),
        "wrote a backbone: {stderr}"
    );
    stderr
}

#[test]
fn bad_datasets_are_refused_with_a_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let msg = refused(&empty);
    assert!(
        msg.contains(&empty.display().to_string()) && msg.contains("no dataset found"),
        "{msg}"
    );

    let short = dir.path().join("short");
    write_idx(&short, "train", 30, Some(vec![1; 29]));
    write_idx(&short, "t10k", 10, None);
    let msg = refused(&short);
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz") && msg.contains("29 labels for 30 images"),
        "{msg}"
    );

    let out_of_range = dir.path().join("range");
    let mut labels: Vec<u8> = (0..30).map(|i| i % 10).collect();
    labels[7] = 42;
    write_idx(&out_of_range, "train", 30, Some(labels));
    write_idx(&out_of_range, "t10k", 10, None);
    let msg = refused(&out_of_range);
    assert!(
        msg.contains("train-labels-idx1-ubyte.gz") && msg.contains("label 42 is out of range"),
        "{msg}"
    );
}
