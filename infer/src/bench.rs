//! Wall-clock of early exit against full depth on the same images: what `bench` measures.

use std::time::Instant;

use burn::prelude::*;

use crate::{Budget, ExitPolicy, ExitScores, InferError, calibrate, run_early_exit};
use dmpo_model::dmpo::DmpoModel;

/// How to time: passes over the images after one untimed warm-up pass.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Budgets (fractions of the backbone's MACs) to calibrate and time beside full depth.
    pub budgets: Vec<f64>,
    /// Timed passes over every batch, per policy.
    pub passes: usize,
}

/// One policy's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyTiming {
    /// `dense` (DyT's reference: every token through every MLP), `full` or the budget, `50%`.
    pub name: String,
    pub images_per_s: f64,
    /// Per-batch latency percentiles, milliseconds.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Full depth's MACs over this policy's: the speed-up the MACs predict.
    pub macs_speedup: f64,
    /// Full depth's median pass time over this policy's: the speed-up measured.
    pub time_speedup: f64,
}

/// Times full depth and early exit at each budget (thresholds calibrated on `calib`) over the
/// same `batches`. Passes are interleaved (full, budget 1, budget 2, ..., full, ...) and each
/// policy's time is its median pass, so the machine's load drifting during the run hits every
/// policy alike. A budget that cannot be calibrated is left out with a warning.
pub fn bench_early_exit<B: Backend>(
    model: &DmpoModel<B>,
    calib: &ExitScores,
    batches: &[(Tensor<B, 4>, Vec<usize>)],
    config: &BenchConfig,
    device: &B::Device,
) -> Result<Vec<PolicyTiming>, InferError> {
    let n: usize = batches.iter().map(|(_, l)| l.len()).sum();
    let passes = config.passes.max(1);
    // With DyT's dispatchers, the reference is the same model with every token through every
    // MLP ("dense"); "full" is then full depth with tokens skipped.
    let dense = model.dispatches().then(|| {
        let mut dense = model.clone();
        dense.dispatchers.clear();
        dense
    });
    let full = ExitPolicy::full_depth(model.num_exits());
    let mut policies: Vec<(String, ExitPolicy)> = Vec::new();
    if dense.is_some() {
        policies.push(("dense".into(), full.clone()));
    }
    policies.push(("full".into(), full));
    for &b in &config.budgets {
        match calibrate(calib, Budget::Fraction(b)) {
            Ok((p, _)) => policies.push((format!("{:.0}%", 100.0 * b), p)),
            Err(e) => tracing::warn!("skipping budget {b}: {e}"),
        }
    }
    struct Times {
        pass_s: Vec<f64>,
        latencies_ms: Vec<f64>,
        macs: f64,
    }
    let mut times: Vec<Times> = policies
        .iter()
        .map(|_| Times {
            pass_s: Vec::new(),
            latencies_ms: Vec::new(),
            macs: 0.0,
        })
        .collect();
    for pass in 0..=passes {
        for (i, ((_, policy), t)) in policies.iter().zip(&mut times).enumerate() {
            let runner = match (&dense, i) {
                (Some(dense), 0) => dense,
                _ => model,
            };
            let start = Instant::now();
            for (images, _) in batches {
                let batch_start = Instant::now();
                let preds = run_early_exit(runner, images.clone(), policy)?;
                let _ = B::sync(device);
                if pass > 0 {
                    t.latencies_ms
                        .push(batch_start.elapsed().as_secs_f64() * 1e3);
                    t.macs += preds.iter().map(|p| p.macs as f64).sum::<f64>();
                }
            }
            if pass > 0 {
                t.pass_s.push(start.elapsed().as_secs_f64());
            }
        }
    }
    let full_pass = median(&times[0].pass_s);
    let full_macs = times[0].macs;
    Ok(policies
        .into_iter()
        .zip(times)
        .map(|((name, _), mut t)| {
            t.latencies_ms.sort_by(f64::total_cmp);
            let pct = |q: f64| percentile(&t.latencies_ms, q);
            let pass = median(&t.pass_s);
            PolicyTiming {
                name,
                images_per_s: n as f64 / pass,
                p50_ms: pct(0.5),
                p95_ms: pct(0.95),
                p99_ms: pct(0.99),
                macs_speedup: full_macs / t.macs,
                time_speedup: full_pass / pass,
            }
        })
        .collect())
}

/// The nearest-rank percentile `q` (in [0, 1]) of `sorted` (ascending): the smallest value with
/// at least a share `q` of the values at or below it. Every bench reports its percentiles
/// this way; with few values the tail ones are the maximum. NaN for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `xs` (the upper one of an even count); `xs` must not be empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
