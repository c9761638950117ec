//! What the binary does around every task: logging to stderr through `tracing`, one line naming
//! the backend and device, and one clear error line with a failing exit status instead of a
//! panic.

use std::process::ExitCode;

/// Our progress at info; the frameworks' own chatter only when it matters (wgpu_hal's driver
/// loader messages never: a missing driver is reported in one line of ours, and the adapter in
/// use in our first line). `RUST_LOG` overrides.
const LOG_FILTER: &str =
    "info,burn=warn,burn_train=warn,burn_core=warn,cubecl=warn,wgpu=warn,wgpu_hal=off,naga=warn";

/// Installs the logger, runs `body`, and turns its error into a logged line and exit status 1.
pub fn run_main<E: std::fmt::Display>(body: impl FnOnce() -> Result<(), E>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files and CI output.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A GPU running out of memory panics inside CubeCL / wgpu: one line instead of a backtrace.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = dmpo_infer::panics::text(info.payload());
        match dmpo_infer::backend::out_of_memory_line(&text) {
            Some(line) => {
                let first = dmpo_infer::panics::message(info.payload());
                tracing::error!("{line} ({first})");
                std::process::exit(1);
            }
            None => default_hook(info),
        }
    }));
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
