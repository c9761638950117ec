//! Several seeds of each method, summarised as mean ± standard deviation per budget: what a
//! comparison must report before one method can be said to beat another.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{CurvePoint, EvalReport};

/// Mean and sample standard deviation (n − 1; 0 for a single run) of one quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
    pub runs: usize,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
            runs: n,
        }
    }
}

/// One budget of one method over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSummary {
    /// The fraction of the backbone's MACs asked for (1.0: full depth).
    pub budget_fraction: f64,
    pub accuracy: MeanStd,
    /// The fraction actually spent on the test split.
    pub cost_fraction: MeanStd,
}

/// One method over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    pub name: String,
    pub seeds: Vec<u64>,
    pub full_depth: BudgetSummary,
    /// The budgets every seed met (a single-exit model meets none below 1.0).
    pub budgets: Vec<BudgetSummary>,
    /// Wall-clock seconds per run (training, calibration and evaluation).
    pub seconds: MeanStd,
}

impl ArmSummary {
    /// Summarises `reports` (one per seed) of one method.
    pub fn new(name: &str, seeds: &[u64], reports: &[EvalReport], seconds: &[f64]) -> Self {
        let summary = |fraction: f64, points: Vec<&CurvePoint>| BudgetSummary {
            budget_fraction: fraction,
            accuracy: MeanStd::of(&points.iter().map(|p| p.accuracy).collect::<Vec<_>>()),
            cost_fraction: MeanStd::of(&points.iter().map(|p| p.cost_fraction).collect::<Vec<_>>()),
        };
        let full = summary(1.0, reports.iter().map(|r| &r.full_depth).collect());
        let mut fractions: Vec<f64> = reports
            .first()
            .map(|r| r.curve.iter().map(|p| p.budget_fraction).collect())
            .unwrap_or_default();
        fractions.retain(|f| {
            reports
                .iter()
                .all(|r| r.curve.iter().any(|p| p.budget_fraction == *f))
        });
        let budgets = fractions
            .into_iter()
            .map(|f| {
                let points = reports
                    .iter()
                    .filter_map(|r| r.curve.iter().find(|p| p.budget_fraction == f))
                    .collect();
                summary(f, points)
            })
            .collect();
        Self {
            name: name.to_string(),
            seeds: seeds.to_vec(),
            full_depth: full,
            budgets,
            seconds: MeanStd::of(seconds),
        }
    }

    /// The summary of `fraction` (1.0 is full depth), if every seed met it.
    pub fn at(&self, fraction: f64) -> Option<&BudgetSummary> {
        if fraction == 1.0 {
            return Some(&self.full_depth);
        }
        self.budgets
            .iter()
            .find(|b| (b.budget_fraction - fraction).abs() < 1e-9)
    }

    /// The mean curve, as an [`EvalReport`] for plotting beside the others.
    pub fn mean_report(&self) -> EvalReport {
        let point = |b: &BudgetSummary| CurvePoint {
            budget_fraction: b.budget_fraction,
            policy: crate::ExitPolicy::full_depth(1),
            accuracy: b.accuracy.mean,
            mean_gmacs: 0.0,
            cost_fraction: b.cost_fraction.mean,
            exit_histogram: vec![],
        };
        EvalReport {
            name: format!("{} (mean of {})", self.name, self.seeds.len()),
            test_samples: 0,
            per_exit_accuracy: vec![],
            exit_gmacs: vec![],
            backbone_gmacs: 0.0,
            full_depth: point(&self.full_depth),
            curve: self.budgets.iter().map(point).collect(),
            token_rate: None,
        }
    }
}

/// A Markdown table: one row per method, one column per budget, `mean ± std` accuracy (%).
pub fn summary_table(arms: &[ArmSummary], fractions: &[f64]) -> String {
    let mut t = String::from("| method |");
    for f in fractions {
        if *f == 1.0 {
            t.push_str(" full depth |");
        } else {
            let _ = write!(t, " {:.0} % |", 100.0 * f);
        }
    }
    t.push_str(" time per run |\n|---|");
    t.push_str(&"---|".repeat(fractions.len() + 1));
    t.push('\n');
    for arm in arms {
        let _ = write!(t, "| {} |", arm.name);
        for f in fractions {
            match arm.at(*f) {
                Some(b) => {
                    let _ = write!(
                        t,
                        " {:.2} ± {:.2} |",
                        100.0 * b.accuracy.mean,
                        100.0 * b.accuracy.std
                    );
                }
                None => t.push_str(" — |"),
            }
        }
        let _ = writeln!(t, " {:.0} ± {:.0} s |", arm.seconds.mean, arm.seconds.std);
    }
    t
}

/// Writes `summary.json`, `summary.csv`, `summary.md` (the table at `fractions`) and
/// `summary.svg` (each method's mean curve) into `dir`.
pub fn write_summary(dir: &Path, arms: &[ArmSummary], fractions: &[f64]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(arms).expect("summary serialises");
    crate::evaluate::write_atomic(&dir.join("summary.json"), json.as_bytes())?;
    let mut csv = String::from(
        "method,budget_fraction,accuracy_mean,accuracy_std,cost_fraction_mean,cost_fraction_std,runs\n",
    );
    for arm in arms {
        for b in std::iter::once(&arm.full_depth).chain(&arm.budgets) {
            let _ = writeln!(
                csv,
                "{},{:.4},{:.6},{:.6},{:.6},{:.6},{}",
                arm.name,
                b.budget_fraction,
                b.accuracy.mean,
                b.accuracy.std,
                b.cost_fraction.mean,
                b.cost_fraction.std,
                b.accuracy.runs
            );
        }
    }
    crate::evaluate::write_atomic(&dir.join("summary.csv"), csv.as_bytes())?;
    crate::evaluate::write_atomic(
        &dir.join("summary.md"),
        summary_table(arms, fractions).as_bytes(),
    )?;
    #[cfg(feature = "plot")]
    {
        let means: Vec<EvalReport> = arms.iter().map(ArmSummary::mean_report).collect();
        crate::evaluate::write_atomic(
            &dir.join("summary.svg"),
            crate::plot_curves(&means).as_bytes(),
        )?;
    }
    Ok(())
}

/// One finished run of a comparison: which method, which seed, what it measured, how long it took.
#[derive(Debug, Clone, Copy)]
pub struct SeedRun<'a> {
    pub method: &'a str,
    pub seed: u64,
    pub report: &'a EvalReport,
    pub seconds: f64,
}

/// `runs.csv`: one row per method, seed and budget (full depth first), every figure the summary
/// averages, so a reader can recompute or re-test it.
pub fn runs_csv(runs: &[SeedRun]) -> String {
    let mut csv = String::from(
        "method,seed,budget_fraction,cost_fraction,mean_gmacs,accuracy,exit_histogram,seconds\n",
    );
    for run in runs {
        for p in std::iter::once(&run.report.full_depth).chain(&run.report.curve) {
            let hist: Vec<String> = p.exit_histogram.iter().map(|h| h.to_string()).collect();
            let _ = writeln!(
                csv,
                "{},{},{:.4},{:.6},{:.6},{:.6},{},{:.1}",
                run.method,
                run.seed,
                p.budget_fraction,
                p.cost_fraction,
                p.mean_gmacs,
                p.accuracy,
                hist.join(";"),
                run.seconds
            );
        }
    }
    csv
}

/// Writes [`runs_csv`] to `dir/runs.csv`, atomically.
pub fn write_runs(dir: &Path, runs: &[SeedRun]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::evaluate::write_atomic(&dir.join("runs.csv"), runs_csv(runs).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExitPolicy;

    fn report(full: f64, half: Option<f64>) -> EvalReport {
        let point = |f: f64, acc: f64| CurvePoint {
            budget_fraction: f,
            policy: ExitPolicy::full_depth(2),
            accuracy: acc,
            mean_gmacs: 1.0,
            cost_fraction: f,
            exit_histogram: vec![1, 1],
        };
        EvalReport {
            name: "m".into(),
            test_samples: 2,
            per_exit_accuracy: vec![0.5, full],
            exit_gmacs: vec![0.5, 1.0],
            backbone_gmacs: 1.0,
            full_depth: point(1.0, full),
            curve: half.map(|a| point(0.5, a)).into_iter().collect(),
            token_rate: None,
        }
    }

    #[test]
    fn mean_and_sample_std() {
        let m = MeanStd::of(&[1.0, 2.0, 3.0]);
        assert_eq!((m.mean, m.std, m.runs), (2.0, 1.0, 3));
        assert_eq!(MeanStd::of(&[4.0]).std, 0.0);
    }

    #[test]
    fn a_budget_missed_by_one_seed_is_left_out() {
        let all = [report(0.9, Some(0.8)), report(0.8, Some(0.6))];
        let arm = ArmSummary::new("a", &[1, 2], &all, &[10.0, 12.0]);
        assert!((arm.full_depth.accuracy.mean - 0.85).abs() < 1e-12);
        assert!((arm.at(0.5).unwrap().accuracy.mean - 0.7).abs() < 1e-12);
        let some = [report(0.9, Some(0.8)), report(0.8, None)];
        let arm = ArmSummary::new("b", &[1, 2], &some, &[10.0, 12.0]);
        assert!(arm.at(0.5).is_none());
        let table = summary_table(&[arm], &[0.5, 1.0]);
        assert!(
            table.contains("| b | — | 85.00 ± 7.07 | 11 ± 1 s |"),
            "{table}"
        );
    }

    #[test]
    fn runs_csv_has_one_row_per_method_seed_and_budget() {
        let (a, b) = (report(0.9, Some(0.8)), report(0.8, None));
        let runs = [
            SeedRun {
                method: "dmpo",
                seed: 1,
                report: &a,
                seconds: 10.0,
            },
            SeedRun {
                method: "dmpo",
                seed: 2,
                report: &b,
                seconds: 12.5,
            },
        ];
        let csv = runs_csv(&runs);
        let rows: Vec<&str> = csv.lines().collect();
        assert_eq!(rows.len(), 1 + 3, "{csv}");
        assert_eq!(rows[1], "dmpo,1,1.0000,1.000000,1.000000,0.900000,1;1,10.0");
        assert_eq!(rows[2], "dmpo,1,0.5000,0.500000,1.000000,0.800000,1;1,10.0");
        assert_eq!(rows[3], "dmpo,2,1.0000,1.000000,1.000000,0.800000,1;1,12.5");
    }
}
