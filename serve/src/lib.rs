//! # dmpo-serve
//!
//! An early-exit inference server for a tuned dmpo-burn model, as a library: an app calls
//! [`serve`] (or [`serve_until_signal`]) with a model and a [`ServeConfig`]; `cargo xtask serve`
//! is one such caller.
//!
//! ```text
//!  HTTP handlers (tokio)                     model thread (one, owns the model)
//!  ─────────────────────                     ─────────────────────────────────────────
//!  POST /v1/classify                         wait for a first image, then gather more
//!   ├ check type, size, budget  ── 4xx        until `max_batch` or `max_wait_ms`
//!   ├ decode + preprocess (blocking pool)     group by budget, run the compacting
//!   ├ admit n images or 503 ───────── queue ─▶ early-exit engine: each image is answered
//!   └ await each image's answer  ◀─────────── the moment it leaves its exit
//! ```
//!
//! Admission is bounded: at most [`ServeConfig::queue`] images are admitted and not yet
//! answered; beyond that a request gets `503` with `Retry-After` at once, so memory stays
//! bounded under any load. A batch that fails (an error or a panic in the backend) answers its
//! own requests with `500` and the server goes on. On shutdown the server stops accepting,
//! answers everything admitted, then returns.

mod api;
mod batcher;
mod budgets;
mod config;
mod error;
mod load_bench;
mod metrics;
mod served;

pub use api::{Answer, ClassifyResponse, ModelCard};
pub use budgets::Budgets;
pub use config::ServeConfig;
pub use error::ServeError;
pub use load_bench::{
    LoadBenchConfig, LoadReport, LoadRun, LoadSummary, Serving, load_bench, write_load_report,
};
pub use served::{Served, serve, serve_until_signal};
