use burn::prelude::*;
use burn::tensor::activation::softmax;
use dmpo_model::dmpo::StageCost;
use serde::{Deserialize, Serialize};

use crate::engine::argmax;
use crate::{Criterion, ExitPolicy, MultiExit, cumulative_costs};

/// Every exit's verdict on every sample of a labelled split, from one pass through all exits:
/// what calibration and evaluation work from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitScores {
    pub criterion: Criterion,
    /// `[sample][exit]`.
    pub confidence: Vec<Vec<f32>>,
    /// `[sample][exit]`: the exit's top-1 class is the label.
    pub correct: Vec<Vec<bool>>,
    /// What each stage costs: a policy's cost per exit follows from it
    /// ([`ExitPolicy::exit_costs`]).
    pub stages: Vec<StageCost>,
    /// MACs of the bare full-depth backbone: what a budget fraction is a fraction of.
    pub full_macs: u64,
    /// `[sample][exit]`: MACs the sample saved up to that exit by skipping tokens (DyT's
    /// dispatch); empty when the model skips nothing.
    #[serde(default)]
    pub saved: Vec<Vec<u64>>,
    /// What a sample would save at full depth if every patch token skipped every MLP.
    #[serde(default)]
    pub skippable: u64,
}

impl ExitScores {
    pub fn num_exits(&self) -> usize {
        self.stages.len()
    }

    /// MACs of leaving at each exit when every exit head runs.
    pub fn exit_macs(&self) -> Vec<u64> {
        cumulative_costs(&self.stages)
    }

    /// The share of patch tokens that went through the MLPs at full depth (DyT), if tokens
    /// were dispatched.
    pub fn token_rate(&self) -> Option<f64> {
        if self.saved.is_empty() || self.skippable == 0 {
            return None;
        }
        let n = self.saved.len() as f64;
        let saved: f64 = self
            .saved
            .iter()
            .map(|s| *s.last().unwrap_or(&0) as f64)
            .sum();
        Some(1.0 - saved / n / self.skippable as f64)
    }

    /// What sample `i` saved by skipping tokens up to exit `k`.
    pub fn saved_by(&self, i: usize, k: usize) -> u64 {
        self.saved.get(i).map_or(0, |s| s[k])
    }
}

/// A compute budget: an average cost per image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Multiply-accumulates per image.
    Macs(f64),
    /// Fraction of the bare backbone's cost.
    Fraction(f64),
}

impl Budget {
    pub fn macs(self, full_macs: u64) -> f64 {
        match self {
            Self::Macs(m) => m,
            Self::Fraction(f) => f * full_macs as f64,
        }
    }
}

/// What a policy does on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulated {
    pub accuracy: f64,
    pub mean_macs: f64,
    /// Samples leaving at each exit.
    pub exit_histogram: Vec<usize>,
}

/// Runs every batch through all exits. `full_macs` is the bare backbone's cost per image.
pub fn collect_scores<B: Backend, M: MultiExit<B>>(
    model: &M,
    batches: impl IntoIterator<Item = (Tensor<B, 4>, Vec<usize>)>,
    criterion: Criterion,
    full_macs: u64,
) -> ExitScores {
    let mut confidence = Vec::new();
    let mut correct = Vec::new();
    let mut saved = Vec::new();
    for (images, labels) in batches {
        let mut x = model.embed(images);
        let mut per_exit = Vec::with_capacity(model.num_exits());
        // `[sample][exit]`, cumulative.
        let mut batch_saved: Option<Vec<Vec<u64>>> = None;
        for k in 0..model.num_exits() {
            let (h, stage_saved) = model.forward_trunk_counted(k, x);
            x = h;
            if let Some(stage) = stage_saved {
                let rows = batch_saved.get_or_insert_with(|| vec![Vec::new(); stage.len()]);
                for (row, s) in rows.iter_mut().zip(stage) {
                    row.push(row.last().copied().unwrap_or(0) + s);
                }
            }
            let probs = softmax(model.forward_exit(k, x.clone()), 1);
            let classes = probs.dims()[1];
            let probs: Vec<f32> = probs.into_data().convert::<f32>().into_vec().expect("f32");
            per_exit.push((probs, classes));
        }
        for (i, label) in labels.iter().enumerate() {
            let (c, ok): (Vec<f32>, Vec<bool>) = per_exit
                .iter()
                .map(|(probs, classes)| {
                    let p = &probs[i * classes..(i + 1) * classes];
                    (criterion.confidence(p), argmax(p) == *label)
                })
                .unzip();
            confidence.push(c);
            correct.push(ok);
        }
        saved.extend(batch_saved.unwrap_or_default());
    }
    ExitScores {
        criterion,
        confidence,
        correct,
        stages: model.stage_costs(),
        full_macs,
        saved,
        skippable: model.skippable_macs(),
    }
}

/// What `policy` does on `scores`: exactly the decisions the engine makes.
pub fn simulate(scores: &ExitScores, policy: &ExitPolicy) -> Simulated {
    let exits = scores.num_exits();
    let exit_macs = policy.exit_costs(&scores.stages);
    let mut histogram = vec![0; exits];
    let (mut right, mut macs) = (0usize, 0f64);
    for (i, (conf, ok)) in scores.confidence.iter().zip(&scores.correct).enumerate() {
        let k = (0..exits)
            .find(|&k| policy.exits_at(k, exits, conf[k]))
            .unwrap_or(exits - 1);
        histogram[k] += 1;
        right += usize::from(ok[k]);
        macs += (exit_macs[k] - scores.saved_by(i, k)) as f64;
    }
    let n = scores.confidence.len().max(1) as f64;
    Simulated {
        accuracy: right as f64 / n,
        mean_macs: macs / n,
        exit_histogram: histogram,
    }
}

/// MSDNet's scheme: exit proportions `q_k ∝ p^k`; at each early exit the most confident
/// `⌊n·q_k⌋` of the samples still running leave, which sets its threshold.
pub fn calibrate_geometric(scores: &ExitScores, p: f64) -> Vec<f32> {
    let exits = scores.num_exits();
    let n = scores.confidence.len();
    let weights: Vec<f64> = (0..exits).map(|k| p.powi(k as i32)).collect();
    let total: f64 = weights.iter().sum();
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut thresholds = Vec::with_capacity(exits.saturating_sub(1));
    for (k, w) in weights.iter().enumerate().take(exits.saturating_sub(1)) {
        let quota = ((n as f64 * w / total).floor() as usize).min(remaining.len());
        remaining.sort_by(|&a, &b| scores.confidence[b][k].total_cmp(&scores.confidence[a][k]));
        let threshold = if quota == 0 {
            1.0
        } else {
            let last_out = scores.confidence[remaining[quota - 1]][k];
            let first_in = remaining
                .get(quota)
                .map_or(0.0, |&i| scores.confidence[i][k]);
            // Strictly-above rule: halfway between the last sample out and the first one in.
            (0.5 * (last_out + first_in)).min(last_out.next_down_f32())
        };
        thresholds.push(threshold.clamp(0.0, 1.0));
        remaining.retain(|&i| scores.confidence[i][k] <= threshold);
    }
    thresholds
}

trait NextDown {
    fn next_down_f32(self) -> f32;
}

impl NextDown for f32 {
    /// The largest f32 below `self` (for positive finite values).
    fn next_down_f32(self) -> f32 {
        if self > 0.0 {
            f32::from_bits(self.to_bits() - 1)
        } else {
            0.0
        }
    }
}

/// Chooses thresholds on a held-out split so the average cost meets `budget`: bisects MSDNet's
/// `p` for the most expensive (so most accurate) policy that stays within the budget.
pub fn calibrate(scores: &ExitScores, budget: Budget) -> Result<(ExitPolicy, Simulated), String> {
    if scores.confidence.is_empty() {
        // Thresholds chosen on nothing would be 1.0 everywhere and look calibrated.
        return Err(
            "no held-out image to calibrate on: every one was unreadable or the \
                    split is empty"
                .into(),
        );
    }
    let target = budget.macs(scores.full_macs);
    let first = scores.exit_macs().first().copied().unwrap_or(0) as f64;
    let n = scores.confidence.len().max(1) as f64;
    let saved: f64 = (0..scores.confidence.len())
        .map(|i| scores.saved_by(i, 0) as f64)
        .sum();
    let cheapest = first - saved / n;
    if target < cheapest {
        return Err(format!(
            "budget {:.3} GMACs is below the cheapest exit ({:.3} GMACs, {:.1}% of the backbone)",
            target / 1e9,
            cheapest / 1e9,
            100.0 * cheapest / scores.full_macs as f64
        ));
    }
    let policy = |log_p: f64| ExitPolicy {
        criterion: scores.criterion,
        thresholds: calibrate_geometric(scores, log_p.exp()),
    };
    // Cost grows with p: find the largest log p whose policy fits the budget.
    let (mut lo, mut hi) = (-20.0f64, 20.0f64);
    let fits = |log_p: f64| simulate(scores, &policy(log_p)).mean_macs <= target;
    if fits(hi) {
        lo = hi;
    } else {
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let best = policy(lo);
    let result = simulate(scores, &best);
    Ok((best, result))
}
