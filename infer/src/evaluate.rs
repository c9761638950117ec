use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Budget, ExitPolicy, ExitScores, calibrate, simulate};

/// One budget: thresholds calibrated on the held-out split, measured on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub budget_fraction: f64,
    pub policy: ExitPolicy,
    pub accuracy: f64,
    pub mean_gmacs: f64,
    /// Mean cost over the bare backbone's.
    pub cost_fraction: f64,
    pub exit_histogram: Vec<usize>,
}

/// Everything `eval` reports for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub name: String,
    pub test_samples: usize,
    /// Accuracy of each exit on its own (every sample through every exit).
    pub per_exit_accuracy: Vec<f64>,
    pub exit_gmacs: Vec<f64>,
    pub backbone_gmacs: f64,
    /// The full-depth model: everyone leaves at the last exit.
    pub full_depth: CurvePoint,
    pub curve: Vec<CurvePoint>,
    /// DyT: the share of patch tokens that went through the MLPs at full depth on the test
    /// split (`None` without token dispatch).
    #[serde(default)]
    pub token_rate: Option<f64>,
}

/// Calibrates on `held_out` for each budget fraction and measures on `test`.
pub fn evaluate(
    name: &str,
    held_out: &ExitScores,
    test: &ExitScores,
    budgets: &[f64],
) -> EvalReport {
    let exits = test.num_exits();
    let point = |fraction: f64, policy: ExitPolicy| {
        let sim = simulate(test, &policy);
        CurvePoint {
            budget_fraction: fraction,
            accuracy: sim.accuracy,
            mean_gmacs: sim.mean_macs / 1e9,
            cost_fraction: sim.mean_macs / test.full_macs as f64,
            exit_histogram: sim.exit_histogram,
            policy,
        }
    };
    let mut full = ExitPolicy::full_depth(exits);
    full.criterion = held_out.criterion;
    let full_depth = point(1.0, full);
    let curve = budgets
        .iter()
        .filter_map(|&f| match calibrate(held_out, Budget::Fraction(f)) {
            Ok((policy, _)) => Some(point(f, policy)),
            Err(e) => {
                tracing::warn!("budget {f}: {e}");
                None
            }
        })
        .collect();
    let n = test.correct.len().max(1) as f64;
    EvalReport {
        name: name.to_string(),
        test_samples: test.correct.len(),
        per_exit_accuracy: (0..exits)
            .map(|k| test.correct.iter().filter(|c| c[k]).count() as f64 / n)
            .collect(),
        exit_gmacs: test.exit_macs().iter().map(|m| *m as f64 / 1e9).collect(),
        backbone_gmacs: test.full_macs as f64 / 1e9,
        full_depth,
        curve,
        token_rate: test.token_rate(),
    }
}

/// Writes `<stem>.json`, `<stem>.csv` and `<stem>.svg` (accuracy vs cost) into `dir`.
pub fn write_report(dir: &Path, stem: &str, reports: &[EvalReport]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(reports).expect("report serialises");
    write_atomic(&dir.join(format!("{stem}.json")), json.as_bytes())?;
    let mut csv =
        String::from("model,budget_fraction,cost_fraction,mean_gmacs,accuracy,exit_histogram\n");
    for r in reports {
        for p in std::iter::once(&r.full_depth).chain(&r.curve) {
            let hist: Vec<String> = p.exit_histogram.iter().map(|h| h.to_string()).collect();
            csv.push_str(&format!(
                "{},{:.4},{:.4},{:.6},{:.4},{}\n",
                r.name,
                p.budget_fraction,
                p.cost_fraction,
                p.mean_gmacs,
                p.accuracy,
                hist.join(";")
            ));
        }
    }
    write_atomic(&dir.join(format!("{stem}.csv")), csv.as_bytes())?;
    // The plot only where the `plot` feature is on (the command line's default; an embedding
    // app that wants the numbers alone does not build plotters).
    #[cfg(feature = "plot")]
    write_atomic(
        &dir.join(format!("{stem}.svg")),
        crate::plot_curves(reports).as_bytes(),
    )?;
    Ok(())
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl std::fmt::Display for EvalReport {
    /// The accuracy-vs-cost table a person reads after training or `eval`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} test images", self.name, self.test_samples)?;
        let exits: Vec<String> = self
            .per_exit_accuracy
            .iter()
            .zip(&self.exit_gmacs)
            .map(|(a, g)| format!("{:.2}% @ {:.4} GMACs", 100.0 * a, g))
            .collect();
        writeln!(f, "per-exit accuracy: {}", exits.join(" | "))?;
        if let Some(rate) = self.token_rate {
            writeln!(
                f,
                "token rate: {:.1}% of patch tokens through the MLPs at full depth",
                100.0 * rate
            )?;
        }
        writeln!(
            f,
            "{:>8} {:>10} {:>8} {:>9}  exits",
            "budget", "GMACs", "cost", "accuracy"
        )?;
        let rows = self
            .curve
            .iter()
            .map(|p| (format!("{:.0}%", 100.0 * p.budget_fraction), p));
        for (label, p) in rows.chain(std::iter::once(("full".to_string(), &self.full_depth))) {
            writeln!(
                f,
                "{label:>8} {:>10.4} {:>7.1}% {:>8.2}%  {:?}",
                p.mean_gmacs,
                100.0 * p.cost_fraction,
                100.0 * p.accuracy,
                p.exit_histogram
            )?;
        }
        Ok(())
    }
}
