//! A load bench on loopback: `clients` concurrent clients send images to a server started
//! in-process, bounded in requests and time; dynamic batching against one image per forward
//! pass, at several budgets, in interleaved rounds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use burn::prelude::*;
use dmpo_infer::{MultiExit, median, percentile};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::{ServeConfig, ServeError, Served, serve};

/// How the server forms its forward passes in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Serving {
    /// Up to `max_batch` images per pass, gathered for up to `max_wait_ms`.
    DynamicBatching,
    /// One image per forward pass, as a naive server does.
    OneByOne,
}

impl Serving {
    pub fn name(self) -> &'static str {
        match self {
            Self::DynamicBatching => "dynamic batching",
            Self::OneByOne => "one image per pass",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadBenchConfig {
    /// Concurrent clients, each with one request in flight.
    pub clients: usize,
    /// Requests per run, at most.
    pub requests: usize,
    /// Seconds per run, at most (a run stops sending when either bound is reached).
    pub max_seconds: f64,
    /// Budgets to serve at, fractions of the backbone's MACs calibrated in the model; exactly 1
    /// means full depth.
    pub budgets: Vec<f64>,
    /// Interleaved rounds; figures are medians over them.
    pub rounds: usize,
    /// The server's batching and admission (its address is ignored: loopback, any free port).
    pub server: ServeConfig,
}

impl Default for LoadBenchConfig {
    fn default() -> Self {
        Self {
            clients: 16,
            requests: 2000,
            max_seconds: 30.0,
            budgets: vec![0.3, 0.5, 1.0],
            rounds: 3,
            server: ServeConfig::default(),
        }
    }
}

/// One run: one way of serving, one budget, one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRun {
    pub round: usize,
    pub serving: Serving,
    pub budget: f64,
    pub clients: usize,
    pub sent: usize,
    /// `200` answers.
    pub answered: usize,
    /// `503` answers (admission full).
    pub refused: usize,
    /// Anything else: other statuses and transport errors.
    pub failed: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Images per forward pass, as the server's metrics counted them.
    pub mean_batch: f64,
    /// Resident memory of the process before and after the run (Linux), MiB.
    pub rss_before_mib: Option<f64>,
    pub rss_after_mib: Option<f64>,
}

/// Medians over rounds for one way of serving and one budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub serving: Serving,
    pub budget: f64,
    pub images_per_s: f64,
    pub images_per_s_min: f64,
    pub images_per_s_max: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_batch: f64,
    pub sent: usize,
    pub answered: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub config: LoadBenchConfig,
    pub runs: Vec<LoadRun>,
    pub summary: Vec<LoadSummary>,
}

/// Runs the load bench on its own runtime; `images`: encoded image files the clients send,
/// in turn.
pub fn load_bench<B, M>(
    served: Served<B, M>,
    images: Vec<Vec<u8>>,
    config: &LoadBenchConfig,
) -> Result<LoadReport, ServeError>
where
    B: Backend,
    M: MultiExit<B> + Clone + Send + 'static,
{
    if images.is_empty() || config.clients == 0 || config.requests == 0 || config.rounds == 0 {
        return Err(ServeError::Config(
            "load bench: needs images, clients, requests and rounds (each at least 1)".into(),
        ));
    }
    config.server.validate()?;
    let images: Arc<Vec<Bytes>> = Arc::new(images.into_iter().map(Bytes::from).collect());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Warm-up (not recorded): first touches of the weights and allocator.
        let warm = LoadBenchConfig {
            requests: config.clients * 4,
            ..config.clone()
        };
        one_run(&served, &images, Serving::DynamicBatching, 1.0, 0, &warm).await?;
        let mut runs = Vec::new();
        for round in 1..=config.rounds {
            for serving in [Serving::DynamicBatching, Serving::OneByOne] {
                for &budget in &config.budgets {
                    let run = one_run(&served, &images, serving, budget, round, config).await?;
                    tracing::info!(
                        "round {round}, {}, budget {budget}: {:.1} images/s, p50 {:.1} ms, \
                         p95 {:.1} ms, p99 {:.1} ms, {} of {} answered, mean batch {:.1}",
                        serving.name(),
                        run.images_per_s,
                        run.p50_ms,
                        run.p95_ms,
                        run.p99_ms,
                        run.answered,
                        run.sent,
                        run.mean_batch
                    );
                    runs.push(run);
                }
            }
        }
        let summary = summarise(&runs);
        Ok(LoadReport {
            config: config.clone(),
            runs,
            summary,
        })
    })
}

async fn one_run<B, M>(
    served: &Served<B, M>,
    images: &Arc<Vec<Bytes>>,
    serving: Serving,
    budget: f64,
    round: usize,
    config: &LoadBenchConfig,
) -> Result<LoadRun, ServeError>
where
    B: Backend,
    M: MultiExit<B> + Clone + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let mut server_config = config.server.clone();
    server_config.budget = None;
    server_config.queue = server_config.queue.max(config.clients);
    if serving == Serving::OneByOne {
        server_config.max_batch = 1;
        server_config.max_wait_ms = 0;
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, served.clone(), server_config, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");
    let budget_arg = if budget == 1.0 {
        "full".to_string()
    } else {
        budget.to_string()
    };
    let url = format!("{base}/v1/classify?budget={budget_arg}");
    // The server answers a bad budget with 400 on every request: find out once, up front.
    let probe = client
        .post(&url)
        .header("content-type", "image/png")
        .body(images[0].clone())
        .send()
        .await
        .map_err(|e| ServeError::Bench(format!("the server did not answer: {e}")))?;
    if !probe.status().is_success() {
        let status = probe.status();
        let text = probe.text().await.unwrap_or_default();
        let _ = stop.send(());
        let _ = server.await;
        return Err(ServeError::Bench(format!(
            "budget {budget_arg}: the server answered {status}: {}",
            text.trim()
        )));
    }
    let rss_before = rss_mib();
    let next = Arc::new(AtomicUsize::new(0));
    let limit = Duration::from_secs_f64(config.max_seconds);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(config.clients);
    for _ in 0..config.clients {
        let (client, url, next, images) = (
            client.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(images),
        );
        let requests = config.requests;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() >= limit {
                    return seen;
                }
                let body = images[i % images.len()].clone();
                let t = Instant::now();
                let status = match client
                    .post(&url)
                    .header("content-type", "image/png")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        // Read the whole answer: the latency is the client's.
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                seen.push((status, t.elapsed().as_secs_f64() * 1e3));
            }
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(
            t.await
                .map_err(|e| ServeError::Bench(format!("a client failed: {e}")))?,
        );
    }
    let seconds = start.elapsed().as_secs_f64();
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| ServeError::Bench(format!("GET /metrics: {e}")))?
        .text()
        .await
        .unwrap_or_default();
    let rss_after = rss_mib();
    let _ = stop.send(());
    server
        .await
        .map_err(|e| ServeError::Bench(format!("the server task failed: {e}")))??;

    let answered = seen.iter().filter(|(s, _)| *s == 200).count();
    let refused = seen.iter().filter(|(s, _)| *s == 503).count();
    let mut latencies: Vec<f64> = seen
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, ms)| *ms)
        .collect();
    latencies.sort_by(f64::total_cmp);
    // The probe request is in the server's batch counts too.
    let mean_batch = metric(&metrics, "dmpo_batch_size_sum")
        .zip(metric(&metrics, "dmpo_batch_size_count"))
        .map(|(sum, count)| sum / count.max(1.0))
        .unwrap_or(f64::NAN);
    Ok(LoadRun {
        round,
        serving,
        budget,
        clients: config.clients,
        sent: seen.len(),
        answered,
        refused,
        failed: seen.len() - answered - refused,
        seconds,
        images_per_s: answered as f64 / seconds,
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        p99_ms: percentile(&latencies, 0.99),
        mean_batch,
        rss_before_mib: rss_before,
        rss_after_mib: rss_after,
    })
}

/// A sample line `name value` of Prometheus' text format.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// This process's resident memory, MiB (Linux; `None` elsewhere).
fn rss_mib() -> Option<f64> {
    dmpo_infer::resident_bytes().map(|b| b as f64 / (1u64 << 20) as f64)
}

fn summarise(runs: &[LoadRun]) -> Vec<LoadSummary> {
    let mut out: Vec<LoadSummary> = Vec::new();
    for r in runs {
        if out
            .iter()
            .any(|s| s.serving == r.serving && s.budget == r.budget)
        {
            continue;
        }
        let same: Vec<&LoadRun> = runs
            .iter()
            .filter(|x| x.serving == r.serving && x.budget == r.budget)
            .collect();
        let col = |f: fn(&LoadRun) -> f64| median(&same.iter().map(|x| f(x)).collect::<Vec<_>>());
        let rates: Vec<f64> = same.iter().map(|x| x.images_per_s).collect();
        out.push(LoadSummary {
            serving: r.serving,
            budget: r.budget,
            images_per_s: median(&rates),
            images_per_s_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            images_per_s_max: rates.iter().copied().fold(0.0, f64::max),
            p50_ms: col(|x| x.p50_ms),
            p95_ms: col(|x| x.p95_ms),
            p99_ms: col(|x| x.p99_ms),
            mean_batch: col(|x| x.mean_batch),
            sent: same.iter().map(|x| x.sent).sum(),
            answered: same.iter().map(|x| x.answered).sum(),
        });
    }
    out
}

/// `serve-load.json` (everything), `serve-load.csv` (one row per run) and
/// `serve-load-summary.csv` (medians) in `dir`, each written atomically.
pub fn write_load_report(dir: &Path, report: &LoadReport) -> Result<(), ServeError> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    let mut runs = String::from(
        "round,serving,budget,clients,sent,answered,refused,failed,seconds,images_per_s,p50_ms,p95_ms,p99_ms,mean_batch,rss_before_mib,rss_after_mib\n",
    );
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_default();
    for r in &report.runs {
        runs.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{:.2},{:.2},{:.2},{:.2},{:.2},{},{}\n",
            r.round,
            r.serving.name(),
            r.budget,
            r.clients,
            r.sent,
            r.answered,
            r.refused,
            r.failed,
            r.seconds,
            r.images_per_s,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.mean_batch,
            opt(r.rss_before_mib),
            opt(r.rss_after_mib)
        ));
    }
    let mut summary = String::from(
        "serving,budget,images_per_s,images_per_s_min,images_per_s_max,p50_ms,p95_ms,p99_ms,mean_batch,sent,answered\n",
    );
    for s in &report.summary {
        summary.push_str(&format!(
            "{},{},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{},{}\n",
            s.serving.name(),
            s.budget,
            s.images_per_s,
            s.images_per_s_min,
            s.images_per_s_max,
            s.p50_ms,
            s.p95_ms,
            s.p99_ms,
            s.mean_batch,
            s.sent,
            s.answered
        ));
    }
    for (name, text) in [
        ("serve-load.json", json),
        ("serve-load.csv", runs),
        ("serve-load-summary.csv", summary),
    ] {
        dmpo_import::write_atomic(&dir.join(name), text.as_bytes())
            .map_err(|e| ServeError::Bench(e.to_string()))?;
    }
    Ok(())
}
