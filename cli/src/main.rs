//! `dmpo`: every dmpo-burn task in one binary, so a user builds once per backend. Each task maps
//! its arguments onto library calls (dmpo-train, dmpo-infer, dmpo-import) and does nothing else.
//! Run it through `cargo xtask <task> --backend flex|ndarray|wgpu|cuda`, which builds this
//! binary with that one backend feature.

/// mimalloc keeps freed activation buffers for reuse where glibc's malloc returns them to the
/// kernel after every layer (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod checkpoint_args;
mod import_tasks;
mod infer_tasks;
mod logging;
mod node_args;
mod paths;
mod pretrain_task;
mod serve_tasks;
mod tools;
mod train_tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dmpo_infer::backend;

type Error = Box<dyn std::error::Error>;

#[derive(Parser)]
#[command(
    name = "dmpo",
    version,
    about = "Tune a ViT with DMPO, calibrate and run early exit"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    Train(train_tasks::TrainArgs),
    Compare(train_tasks::CompareArgs),
    Pretrain(pretrain_task::PretrainArgs),
    PixelBaseline(tools::PixelBaselineArgs),
    Subset(tools::SubsetArgs),
    Digits(tools::DigitsArgs),
    BenchStep(tools::BenchStepArgs),
    Calibrate(infer_tasks::CalibrateArgs),
    Eval(infer_tasks::EvalArgs),
    Infer(infer_tasks::InferArgs),
    Bench(infer_tasks::BenchArgs),
    Import(import_tasks::ImportArgs),
    Forward(import_tasks::ForwardArgs),
    BenchVit(import_tasks::BenchVitArgs),
    Serve(serve_tasks::ServeArgs),
    ServeBench(serve_tasks::ServeBenchArgs),
    #[cfg(feature = "flex")]
    Roofline(tools::RooflineArgs),
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_e`, mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Keep freed pages rather than handing them back to the kernel a second later (mimalloc
    // v3's default): a training step frees and reallocates the same activation buffers, and every
    // page handed back came back as a page fault and a 2 MiB huge-page clear in the next step
    // (perf: 7,400 faults and a sixth of the demo's step time; docs/benchmarks.md). The process
    // keeps its peak, which it reaches again every step anyway.
    // SAFETY: set before any other thread exists; the option takes a number of milliseconds.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    logging::run_main(|| run(Cli::parse()))
}

fn run(cli: Cli) -> Result<(), Error> {
    // A missing driver or GPU is one clear line before any work.
    backend::check_device()?;
    tracing::info!("backend {}: {}", backend::NAME, backend::describe_device());
    match cli.task {
        // A server's threads wait on requests: they must not hold a compute thread.
        Task::Serve(a) => serve_tasks::serve(a),
        Task::ServeBench(a) => serve_tasks::serve_bench(a),
        task => on_compute_thread(|| compute(task).map_err(|e| e.to_string())).map_err(Error::from),
    }
}

/// On Flex, the task runs on one of the backend's own threads, which then does the serial work
/// between parallel ops itself ([`dmpo_infer::on_compute_thread`]); elsewhere in place.
fn on_compute_thread<R: Send>(task: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    return dmpo_infer::on_compute_thread(task);
    #[cfg(not(feature = "flex"))]
    task()
}

/// Every task but the server's.
fn compute(task: Task) -> Result<(), Error> {
    match task {
        Task::Train(a) => train_tasks::train(a),
        Task::Compare(a) => train_tasks::compare(a),
        Task::Pretrain(a) => pretrain_task::pretrain(a),
        Task::PixelBaseline(a) => tools::pixel_baseline(a),
        Task::Subset(a) => tools::subset(a),
        Task::Digits(a) => tools::digits(a),
        Task::BenchStep(a) => tools::bench_step(a),
        Task::Calibrate(a) => infer_tasks::calibrate_task(a),
        Task::Eval(a) => infer_tasks::eval_task(a),
        Task::Infer(a) => infer_tasks::infer_task(a),
        Task::Bench(a) => infer_tasks::bench_task(a),
        Task::Import(a) => Ok(import_tasks::import(a)?),
        Task::Forward(a) => Ok(import_tasks::forward(a)?),
        Task::BenchVit(a) => Ok(import_tasks::bench_vit(a)?),
        #[cfg(feature = "flex")]
        Task::Roofline(a) => tools::roofline(a),
        Task::Serve(_) | Task::ServeBench(_) => unreachable!("served by `run`"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_index_is_mimallocs() {
        // mimalloc v3's default, 1000 ms (src/options.c), read back through the index used
        // above: another option at that index would have another default.
        // SAFETY: reads an option; nothing else sets it in this test binary.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
            1000
        );
    }
}
