//! Several methods (arms) on the same backbone, data and seeds, summarised per budget as
//! mean ± std: what `cargo xtask compare` runs.

use std::path::Path;

use burn::tensor::backend::AutodiffBackend;
use dmpo_infer::{ArmSummary, EvalReport, SeedRun, write_report, write_runs, write_summary};

use crate::tune::{BackboneSource, TuneData, arm_settings, tune};
use crate::{Arm, TuneConfig, TuneError};

/// Where a finished run records its wall-clock time.
pub const RUN_TIME_FILE: &str = "run-time.json";

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Every setting but the method, which each arm sets.
    pub tune: TuneConfig,
    pub arms: Vec<Arm>,
    /// Each seed a full run of every arm, in `<arm>/seed-<s>`; empty: `tune.train.seed` alone,
    /// in `<arm>` as `train` writes.
    pub seeds: Vec<u64>,
}

/// Every run's report and the summary over seeds.
#[derive(Debug, Clone)]
pub struct CompareReport {
    /// Per arm, one report per seed (in `seeds` order), with the seconds each run took.
    pub runs: Vec<Vec<(EvalReport, f64)>>,
    pub summaries: Vec<ArmSummary>,
    /// The budgets of the summary table, full depth (1.0) last.
    pub fractions: Vec<f64>,
}

/// Trains every arm for every seed into `out/<arm>[/seed-<s>]`, seed by seed (so an interrupted
/// comparison has whole seeds to show), then writes `summary.{json,csv,md,svg}`, `runs.csv`
/// (one row per arm, seed and budget) and, for one seed, `compare.{json,csv,svg}`. With
/// `resume`, runs finished before are read back and an interrupted one continues from its last
/// checkpoint.
pub fn compare<B: AutodiffBackend>(
    config: &CompareConfig,
    backbone: &BackboneSource,
    data: &TuneData,
    out: &Path,
    resume: bool,
    devices: &[B::Device],
) -> Result<CompareReport, TuneError> {
    if config.tune.train.nodes.is_some() {
        return Err(TuneError::Config(
            "compare trains several models in one process, and a process joins a node group \
             once: train each arm with `train --nodes ...` instead"
                .into(),
        ));
    }
    // Settings a later arm would refuse are refused before the first arm trains.
    for &arm in &config.arms {
        arm_settings(&config.tune, arm)?;
    }
    let per_seed_dirs = !config.seeds.is_empty();
    let seeds = if per_seed_dirs {
        config.seeds.clone()
    } else {
        vec![config.tune.train.seed]
    };
    let mut runs: Vec<Vec<(EvalReport, f64)>> = vec![Vec::new(); config.arms.len()];
    for &seed in &seeds {
        for (i, &arm) in config.arms.iter().enumerate() {
            let mut dir = out.join(arm.dir());
            if per_seed_dirs {
                dir = dir.join(format!("seed-{seed}"));
            }
            let done = finished_run(&dir).filter(|_| resume);
            let finished = match done {
                Some(done) => {
                    tracing::info!(
                        "{} seed {seed}: finished before, in {}",
                        arm.name(),
                        dir.display()
                    );
                    done
                }
                None => {
                    let run = config
                        .tune
                        .clone()
                        .with_method(arm)
                        .with_train(config.tune.train.clone().with_seed(seed));
                    let start = std::time::Instant::now();
                    let tuned = tune::<B>(&run, backbone, data.clone(), &dir, resume, devices)?;
                    let s = start.elapsed().as_secs_f64();
                    let time = serde_json::json!({ "seconds": s });
                    dmpo_import::write_atomic(
                        &dir.join(RUN_TIME_FILE),
                        time.to_string().as_bytes(),
                    )?;
                    (tuned.report, s)
                }
            };
            runs[i].push(finished);
        }
    }
    let summaries: Vec<ArmSummary> = config
        .arms
        .iter()
        .zip(&runs)
        .map(|(arm, runs)| {
            let (reports, seconds): (Vec<EvalReport>, Vec<f64>) = runs.iter().cloned().unzip();
            ArmSummary::new(arm.name(), &seeds, &reports, &seconds)
        })
        .collect();
    let io = |source| TuneError::Io {
        path: out.to_path_buf(),
        source,
    };
    if seeds.len() == 1 {
        let all: Vec<EvalReport> = runs.iter().flatten().map(|(r, _)| r.clone()).collect();
        write_report(out, "compare", &all).map_err(io)?;
    }
    let mut fractions = config.tune.budgets.clone();
    fractions.push(1.0);
    write_summary(out, &summaries, &fractions).map_err(io)?;
    let rows: Vec<SeedRun> = seeds
        .iter()
        .enumerate()
        .flat_map(|(s, &seed)| {
            config
                .arms
                .iter()
                .zip(&runs)
                .map(move |(arm, runs)| SeedRun {
                    method: arm.name(),
                    seed,
                    report: &runs[s].0,
                    seconds: runs[s].1,
                })
        })
        .collect();
    write_runs(out, &rows).map_err(io)?;
    tracing::info!(
        "wrote {}/summary.{{json,csv,md,svg}} and runs.csv (one row per arm, seed and budget)",
        out.display()
    );
    Ok(CompareReport {
        runs,
        summaries,
        fractions,
    })
}

/// The report and time of a run already finished in `dir`.
fn finished_run(dir: &Path) -> Option<(EvalReport, f64)> {
    let report: Vec<EvalReport> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).ok()?).ok()?;
    let time: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(RUN_TIME_FILE)).ok()?).ok()?;
    Some((report.into_iter().next()?, time["seconds"].as_f64()?))
}
