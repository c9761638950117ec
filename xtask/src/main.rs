//! `cargo xtask <task> [--backend flex|ndarray|wgpu|cuda] [--debug] [task arguments...]`
//!
//! Every user-facing job goes through here: it picks the binary that implements the task, builds
//! it in release mode with exactly one backend feature, and runs it with the remaining arguments.
//! Kept free of dependencies so it compiles in seconds.

use std::process::{Command, ExitCode};

/// Which binary runs each task: (task, package, bin, extra features, what it does).
const TASKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "train",
        "dmpo-train",
        "dmpo-train",
        "tui",
        "tune a backbone with DMPO, calibrate, evaluate",
    ),
    (
        "compare",
        "dmpo-train",
        "dmpo-train",
        "tui",
        "train DMPO and the multi-exit baseline, plot both",
    ),
    (
        "pretrain",
        "dmpo-train",
        "dmpo-train",
        "tui",
        "pretrain a small ViT from scratch (a labelled dataset, or synthetic patterns)",
    ),
    (
        "pixel-baseline",
        "dmpo-train",
        "dmpo-train",
        "",
        "logistic regression on raw pixels: the floor a tuned model must clear",
    ),
    (
        "subset",
        "dmpo-train",
        "dmpo-train",
        "",
        "write a class-balanced subset of an IDX dataset",
    ),
    (
        "calibrate",
        "dmpo-infer",
        "dmpo-infer",
        "",
        "choose exit thresholds for a compute budget",
    ),
    (
        "eval",
        "dmpo-infer",
        "dmpo-infer",
        "",
        "accuracy-vs-cost curve (table, CSV, JSON, SVG)",
    ),
    (
        "infer",
        "dmpo-infer",
        "dmpo-infer",
        "",
        "classify images with early exit",
    ),
    (
        "bench",
        "dmpo-infer",
        "dmpo-infer",
        "",
        "images/s and latency, full depth vs early exit",
    ),
    (
        "bench-vit",
        "dmpo-import",
        "dmpo-import",
        "",
        "full-depth ViT images/s on random input (vs PyTorch: benches/bench_vs_torch.py)",
    ),
    (
        "bench-step",
        "dmpo-train",
        "dmpo-train",
        "",
        "training-step images/s and memory, frozen vs full (vs PyTorch: benches/)",
    ),
    (
        "import",
        "dmpo-import",
        "dmpo-import",
        "",
        "convert a timm / HF / PyTorch checkpoint",
    ),
    (
        "forward",
        "dmpo-import",
        "dmpo-import",
        "",
        "run the full-depth ViT on a tensor file",
    ),
];

const BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "cuda"];

fn usage() -> String {
    let mut s = String::from(
        "usage: cargo xtask <task> [--backend flex|ndarray|wgpu|cuda] [--debug] [arguments...]\n\ntasks:\n",
    );
    for (task, _, _, _, what) in TASKS {
        s.push_str(&format!("  {task:<10} {what}\n"));
    }
    s.push_str("\n`cargo xtask <task> --help` lists a task's arguments.\n");
    s
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = (!args.is_empty()).then(|| args.remove(0)) else {
        eprint!("{}", usage());
        return ExitCode::FAILURE;
    };
    if task == "--help" || task == "-h" || task == "help" {
        print!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let Some(&(_, package, bin, extra, _)) = TASKS.iter().find(|(t, ..)| *t == task) else {
        eprint!("unknown task `{task}`\n\n{}", usage());
        return ExitCode::FAILURE;
    };
    let mut backend = "flex".to_string();
    let mut release = true;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--backend" {
            match it.next() {
                Some(b) => backend = b,
                None => {
                    eprintln!("--backend needs a value: {}", BACKENDS.join(", "));
                    return ExitCode::FAILURE;
                }
            }
        } else if let Some(b) = arg.strip_prefix("--backend=") {
            backend = b.to_string();
        } else if arg == "--debug" {
            release = false;
        } else {
            rest.push(arg);
        }
    }
    if !BACKENDS.contains(&backend.as_str()) {
        eprintln!(
            "unknown backend `{backend}`; choose one of {}",
            BACKENDS.join(", ")
        );
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "run",
        "--package",
        package,
        "--bin",
        bin,
        "--no-default-features",
    ]);
    let features = if extra.is_empty() {
        backend.clone()
    } else {
        format!("{backend},{extra}")
    };
    cmd.args(["--features", &features]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--").arg(&task).args(&rest);
    match cmd.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("could not run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
