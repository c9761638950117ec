//! The user's path end to end on a tiny backbone and dataset: `dmpo-train train` writes a
//! self-contained model folder that loads, runs early exit with its calibrated thresholds, and
//! explains what to do when thresholds are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::NdArray;
use burn::prelude::*;
use dmpo_infer::{load_model_dir, read_model_info, run_early_exit, write_model_info};

mod common;
use common::{pico_command, write_idx};

#[test]
fn train_writes_a_model_folder_that_infers_with_early_exit() {
    let dir = tempfile::tempdir().unwrap();
    bar_data(dir.path(), 200, 60);
    let out = dir.path().join("model");
    let status = train_command(dir.path(), &out)
        .args([
            "--epochs",
            "2",
            "--batch",
            "32",
            "--workers",
            "1",
            "--no-augment",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("per-exit accuracy"), "{stdout}");
    for f in [
        "model.json",
        "trained.safetensors",
        "backbone/config.json",
        "backbone/model.bpk",
        "eval.json",
        "eval.csv",
        "eval.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // Every epoch's metrics, per exit, as CSV and a plot.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    for row in [
        "valid,1,Accuracy exit 1,",
        "valid,2,Accuracy exit 2,",
        "train,2,Loss,",
    ] {
        assert!(csv.contains(row), "{row} not in {csv}");
    }
    assert!(
        std::fs::read_to_string(out.join("accuracy.svg"))
            .unwrap()
            .starts_with("<svg")
    );

    let device = Default::default();
    let (info, model) = load_model_dir::<NdArray>(&out, &device).unwrap();
    let policy = info.require_policy(&out).unwrap().clone();
    assert_eq!(info.classes.len(), 10);
    let x =
        Tensor::<NdArray, 4>::random([3, 3, 32, 32], burn::tensor::Distribution::Default, &device);
    let preds = run_early_exit(&model, x, &policy).unwrap();
    assert_eq!(preds.len(), 3);

    // Without thresholds, the error says how to calibrate.
    let mut bare = read_model_info(&out).unwrap();
    bare.policy = None;
    write_model_info(&out, &bare).unwrap();
    let msg = read_model_info(&out)
        .unwrap()
        .require_policy(&out)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cargo xtask calibrate"), "{msg}");
}

/// `dir/data`: an IDX dataset of `train` training and `test` test images of bars.
fn bar_data(dir: &Path, train: usize, test: usize) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, "train", train, None);
    write_idx(&data, "t10k", test, None);
    data
}

/// `dmpo-train train` of the pico backbone on the bar dataset in `dir/data` into `out`, with
/// two exits and a 100 % budget; callers add the training length and anything else.
fn train_command(dir: &Path, out: &Path) -> Command {
    let mut cmd = pico_command("train", &dir.join("data"), out);
    cmd.args(["--budgets", "0.9,1.0", "--budget", "1.0"]);
    cmd
}

/// Runs `train` with `args` added, which must fail before writing anything to `out`; its stderr.
fn refused_train(dir: &Path, out: &Path, args: &[&str]) -> String {
    let output = train_command(dir, out).args(args).output().unwrap();
    assert!(!output.status.success(), "train {args:?} was not refused");
    assert!(!out.exists(), "nothing is written for a refused run");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The resume test's run: 3 epochs, augmented, two loader workers, a fixed seed.
fn resumable_run(dir: &Path, out: &Path) -> Command {
    let mut cmd = train_command(dir, out);
    cmd.args([
        "--epochs",
        "3",
        "--batch",
        "16",
        "--workers",
        "2",
        "--seed",
        "5",
    ]);
    cmd
}

/// A safetensors file's header (as JSON, so the metadata's key order does not matter) and its
/// tensor bytes.
fn safetensors_content(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_model_as_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    bar_data(dir.path(), 160, 40);

    let whole = dir.path().join("whole");
    let done = resumable_run(dir.path(), &whole).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );

    // The same run, killed (SIGKILL: no clean-up of any kind) once epoch 1's checkpoint is on
    // disk, that is while epoch 2 trains or its checkpoint is being written.
    let killed = dir.path().join("killed");
    let mut child = resumable_run(dir.path(), &killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Model, optimiser and scheduler are written by separate threads: wait for all three.
    let first: Vec<PathBuf> = ["model", "optim", "scheduler"]
        .iter()
        .map(|part| killed.join(format!("training/checkpoint/{part}-1.mpk")))
        .collect();
    let start = std::time::Instant::now();
    while !first.iter().all(|f| f.exists()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch 1's checkpoint"
        );
        assert!(
            start.elapsed().as_secs() < 300,
            "no checkpoint after 5 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("trained.safetensors").exists(),
        "killed too late"
    );

    let resumed = resumable_run(dir.path(), &killed)
        .arg("--resume")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    // Bit for bit the same trained add-ons, hence the same evaluation.
    assert!(
        safetensors_content(&whole.join("trained.safetensors"))
            == safetensors_content(&killed.join("trained.safetensors")),
        "resumed weights differ from the uninterrupted run's"
    );
    assert_eq!(
        std::fs::read_to_string(whole.join("eval.csv")).unwrap(),
        std::fs::read_to_string(killed.join("eval.csv")).unwrap()
    );
}

#[test]
fn a_bad_self_distillation_weight_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let stderr = refused_train(dir.path(), &out, &["--distill", "1.5"]);
    assert!(
        stderr.contains("--distill") && stderr.contains("[0, 1]"),
        "{stderr}"
    );
}

/// `compare` over several arms and seeds: one run per arm and seed, the mean ± std table over
/// the seeds, and `--resume` keeps the runs already finished.
#[test]
fn compare_runs_every_arm_for_every_seed_and_resumes_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = bar_data(dir.path(), 120, 40);
    let out = dir.path().join("compare");
    let compare = || {
        pico_command("compare", &data, &out)
            .args(["--arms", "dmpo,baseline,last-exit,linear-probe"])
            .args(["--seeds", "1,2", "--budgets", "0.7", "--budget", "1.0"])
            .args(["--epochs", "1", "--batch", "32", "--workers", "1"])
            .args(["--no-augment", "--resume"])
            .output()
            .unwrap()
    };
    let first = compare();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for arm in ["dmpo", "baseline", "last-exit", "linear-probe"] {
        for seed in [1, 2] {
            let run = out.join(arm).join(format!("seed-{seed}"));
            assert!(run.join("eval.json").is_file(), "{}", run.display());
        }
    }
    let probe: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("linear-probe/seed-1/model.json")).unwrap(),
    )
    .unwrap();
    assert!(probe["dmpo"]["adapter"].is_null(), "{probe}");
    let table = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for row in [
        "| DMPO |",
        "| baseline |",
        "| last exit |",
        "| linear probe |",
    ] {
        assert!(table.contains(row), "{row} not in {table}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary[0]["full_depth"]["accuracy"]["runs"], 2);
    // One row per arm, seed and budget (full depth, and 70 % for the two multi-exit arms), and
    // the summary's mean is theirs.
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 1 + (2 * 2 + 2) * 2, "{runs}");
    let full: Vec<f64> = runs
        .lines()
        .filter(|l| l.starts_with("DMPO,") && l.contains(",1.0000,"))
        .map(|l| l.split(',').nth(5).unwrap().parse().unwrap())
        .collect();
    assert_eq!(full.len(), 2, "{runs}");
    let mean = summary[0]["full_depth"]["accuracy"]["mean"]
        .as_f64()
        .unwrap();
    assert!(
        (mean - (full[0] + full[1]) / 2.0).abs() < 1e-6,
        "{mean} vs {full:?}"
    );

    let time = out.join("dmpo/seed-1/run-time.json");
    let before = std::fs::read_to_string(&time).unwrap();
    let second = compare();
    assert!(second.status.success());
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(log.contains("finished before"), "{log}");
    assert_eq!(std::fs::read_to_string(&time).unwrap(), before);
}

/// `--img-size` resamples a checkpoint file's position grid; a converted backbone directory of
/// another size is refused with one line.
#[test]
fn img_size_resamples_a_checkpoint_and_refuses_a_converted_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = bar_data(dir.path(), 60, 20);
    let out = dir.path().join("model");
    let output = train_command(dir.path(), &out)
        .args(["--img-size", "48", "--epochs", "1", "--workers", "1"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("backbone/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["vit"]["img_size"], 48, "{config}");

    let output = Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .args(["train", "--img-size", "64", "--backbone"])
        .arg(out.join("backbone"))
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("again"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--img-size 64") && stderr.contains("48 px"),
        "{stderr}"
    );
}

/// DyT and DMPO+DyT train, calibrate and infer from the README's commands; their model folders
/// record the method, and a folder whose method does not match its tensors is refused.
#[test]
fn dyt_methods_train_into_model_folders_that_infer() {
    let dir = tempfile::tempdir().unwrap();
    let data = bar_data(dir.path(), 120, 40);
    for method in ["dyt", "dmpo+dyt"] {
        let out = dir.path().join(method);
        // A budget above 1: the adapters and dispatchers cost something, and on these tiny
        // images the gates may keep most tokens after two epochs.
        let output = pico_command("train", &data, &out)
            .args(["--budgets", "1.5", "--budget", "1.5"])
            .args(["--method", method, "--token-rate", "0.6"])
            .args(["--epochs", "2", "--batch", "32", "--workers", "1"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let info = read_model_info(&out).unwrap();
        let dispatch = info.dmpo.dispatch.clone().expect("the method is recorded");
        assert_eq!(dispatch.token_rate, 0.6);
        let device = Default::default();
        let (info, model) = load_model_dir::<NdArray>(&out, &device).unwrap();
        assert_eq!(model.dispatchers.len(), model.backbone.depth());
        let policy = info.require_policy(&out).unwrap().clone();
        let x = Tensor::<NdArray, 4>::random(
            [3, 3, 32, 32],
            burn::tensor::Distribution::Default,
            &device,
        );
        let preds = run_early_exit(&model, x, &policy).unwrap();
        let full = model.stage_costs().iter().map(|c| c.total()).sum::<u64>();
        // A sample that skipped tokens is charged less than every token through every MLP.
        assert!(preds.iter().all(|p| p.macs <= full), "{method}");

        // model.json without the dispatch: the tensors say otherwise.
        let mut info = read_model_info(&out).unwrap();
        info.dmpo.dispatch = None;
        write_model_info(&out, &info).unwrap();
        let err = load_model_dir::<NdArray>(&out, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("method does not match"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
    // An out-of-range rate is refused before any work.
    let out = dir.path().join("refused");
    let stderr = refused_train(
        dir.path(),
        &out,
        &["--method", "dyt", "--token-rate", "1.5"],
    );
    assert!(
        stderr.contains("--token-rate") && stderr.contains("1.5"),
        "{stderr}"
    );
    // In `compare`, before the first arm trains, even when DyT comes last.
    let out = dir.path().join("refused-compare");
    let output = Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .args(["compare", "--arms", "dmpo,dyt", "--token-rate", "0"])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--token-rate"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn data_parallel_training_on_the_cpu_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    bar_data(dir.path(), 20, 10);
    // The CPU has one device (its threads already share the work).
    let out = dir.path().join("two-cpus");
    let stderr = refused_train(dir.path(), &out, &["--devices", "0,1"]);
    assert!(
        stderr.contains("--devices") && stderr.contains("one device"),
        "{stderr}"
    );
    // The task's first line names the backend and device; the refusal is the one other line.
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].contains("INFO") && lines[0].contains("backend flex"));
    assert!(lines[1].contains("ERROR"), "{stderr}");
}
