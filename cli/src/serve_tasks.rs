//! `serve` and `serve-bench`: the inference server of dmpo-serve, and its load bench.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use dmpo_infer::TunedModel;
use dmpo_infer::backend::{self, Backend};
use dmpo_infer::data::load_splits;
use dmpo_infer::image::ImageFormat;
use dmpo_serve::{
    LoadBenchConfig, ServeConfig, Served, load_bench, serve_until_signal, write_load_report,
};

use crate::Error;

/// How the server batches and admits requests (shared by `serve` and `serve-bench`).
#[derive(Args)]
pub struct Batching {
    /// At most this many images per forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// How long the first image of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Images admitted and not yet answered, at most; beyond it requests get 503.
    #[arg(long, default_value_t = 256)]
    queue: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 8.0)]
    max_body_mib: f64,
}

impl Batching {
    fn config(&self, addr: SocketAddr, budget: Option<f64>) -> ServeConfig {
        ServeConfig {
            addr,
            budget,
            max_batch: self.max_batch,
            max_wait_ms: self.max_wait_ms,
            queue: self.queue,
            max_body_bytes: (self.max_body_mib * (1 << 20) as f64) as usize,
        }
    }
}

/// Serve a tuned model over HTTP: POST /v1/classify, GET / (web page), /metrics, /healthz.
#[derive(Args)]
pub struct ServeArgs {
    /// A tuned model directory (from `train`).
    #[arg(long)]
    model: PathBuf,
    /// Budget of a request that names none, among those calibrated in the model (default: the
    /// model's own).
    #[arg(long)]
    budget: Option<f64>,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    #[command(flatten)]
    batching: Batching,
}

pub fn serve(a: ServeArgs) -> Result<(), Error> {
    let model = TunedModel::<Backend>::load(&a.model, &backend::device())?;
    let config = a.batching.config(SocketAddr::new(a.host, a.port), a.budget);
    tracing::info!(
        "{} backend, model {}, at most {} images per pass, {} ms to gather a batch",
        backend::NAME,
        a.model.display(),
        config.max_batch,
        config.max_wait_ms
    );
    serve_until_signal(model, config)?;
    Ok(())
}

/// Load bench on loopback: concurrent clients send test images; dynamic batching against one
/// image per forward pass, at several budgets.
#[derive(Args)]
pub struct ServeBenchArgs {
    #[arg(long)]
    model: PathBuf,
    /// Dataset whose test images the clients send.
    #[arg(long)]
    data: PathBuf,
    /// Distinct test images the clients send in turn.
    #[arg(long, default_value_t = 512)]
    images: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Requests per run, at most.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Seconds per run, at most.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Budgets (fractions calibrated in the model; 1 = full depth).
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,1")]
    budgets: Vec<f64>,
    /// Interleaved rounds (figures are medians over them).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    batching: Batching,
    /// Where to write serve-load.{json,csv} and serve-load-summary.csv.
    #[arg(long, default_value = "runs/serve-bench")]
    out: PathBuf,
}

pub fn serve_bench(a: ServeBenchArgs) -> Result<(), Error> {
    let model = TunedModel::<Backend>::load(&a.model, &backend::device())?;
    let test = load_splits(&a.data)?.test;
    let mut images = Vec::with_capacity(a.images);
    for sample in test.samples.iter().take(a.images) {
        let mut png = Cursor::new(Vec::new());
        sample
            .image
            .load()?
            .write_to(&mut png, ImageFormat::Png)
            .map_err(|e| format!("{}: {e}", sample.image.describe()))?;
        images.push(png.into_inner());
    }
    let config = LoadBenchConfig {
        clients: a.clients,
        requests: a.requests,
        max_seconds: a.seconds,
        budgets: a.budgets,
        rounds: a.rounds,
        server: a
            .batching
            .config(SocketAddr::from(([127, 0, 0, 1], 0)), None),
    };
    tracing::info!(
        "{} backend: {} clients, {} images, up to {} requests or {} s per run, {} rounds",
        backend::NAME,
        config.clients,
        images.len(),
        config.requests,
        config.max_seconds,
        config.rounds
    );
    let report = load_bench(Served::from(model), images, &config)?;
    println!(
        "\nserve-bench: {} clients, {} backend, median of {} interleaved rounds (min-max)",
        config.clients,
        backend::NAME,
        config.rounds
    );
    println!(
        "{:<20} {:>6} {:>22} {:>8} {:>8} {:>8} {:>7} {:>13}",
        "serving", "budget", "images/s", "p50 ms", "p95 ms", "p99 ms", "batch", "answered"
    );
    for s in &report.summary {
        println!(
            "{:<20} {:>6} {:>9.1} ({:>5.1}-{:>5.1}) {:>8.1} {:>8.1} {:>8.1} {:>7.1} {:>6}/{:<6}",
            s.serving.name(),
            if s.budget == 1.0 {
                "full".to_string()
            } else {
                format!("{:.0}%", 100.0 * s.budget)
            },
            s.images_per_s,
            s.images_per_s_min,
            s.images_per_s_max,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.mean_batch,
            s.answered,
            s.sent
        );
    }
    write_load_report(&a.out, &report)?;
    tracing::info!("wrote {}/serve-load.{{json,csv}}", a.out.display());
    Ok(())
}
