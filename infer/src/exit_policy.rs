use dmpo_model::dmpo::StageCost;
use serde::{Deserialize, Serialize};

/// How confident an exit is about a sample, from its softmax probabilities; always in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The largest probability (MSDNet, LGViT).
    #[default]
    MaxProb,
    /// `1 − H(p) / ln C`: 1 for a one-hot, 0 for uniform.
    Entropy,
    /// Top-1 minus top-2 probability.
    Margin,
}

impl Criterion {
    pub fn confidence(self, probs: &[f32]) -> f32 {
        match self {
            Self::MaxProb => probs.iter().copied().fold(0.0, f32::max),
            Self::Entropy => {
                let h: f32 = probs
                    .iter()
                    .filter(|p| **p > 0.0)
                    .map(|p| -p * p.ln())
                    .sum();
                let max = (probs.len().max(2) as f32).ln();
                (1.0 - h / max).clamp(0.0, 1.0)
            }
            Self::Margin => {
                let (mut first, mut second) = (0f32, 0f32);
                for &p in probs {
                    if p > first {
                        second = first;
                        first = p;
                    } else if p > second {
                        second = p;
                    }
                }
                first - second
            }
        }
    }
}

/// When samples leave: at early exit `k` a sample leaves if its confidence is strictly above
/// `thresholds[k]`; the last exit always answers. A threshold of 1.0 never lets anyone out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitPolicy {
    pub criterion: Criterion,
    /// One per early exit (all exits but the last), each in [0, 1].
    pub thresholds: Vec<f32>,
}

impl ExitPolicy {
    /// Everyone runs to the last exit.
    pub fn full_depth(num_exits: usize) -> Self {
        Self {
            criterion: Criterion::MaxProb,
            thresholds: vec![1.0; num_exits.saturating_sub(1)],
        }
    }

    pub fn validate(&self, num_exits: usize) -> Result<(), String> {
        if self.thresholds.len() + 1 != num_exits {
            return Err(format!(
                "{} thresholds for {num_exits} exits; expected one per early exit ({})",
                self.thresholds.len(),
                num_exits.saturating_sub(1)
            ));
        }
        if let Some(t) = self.thresholds.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(format!("threshold {t} is outside [0, 1]"));
        }
        Ok(())
    }

    /// Whether exit `k` can let any sample leave, i.e. whether its head needs computing at all:
    /// confidences lie in [0, 1], so a threshold of 1.0 means never.
    pub fn evaluates(&self, k: usize, num_exits: usize) -> bool {
        k + 1 >= num_exits || self.thresholds[k] < 1.0
    }

    /// MACs of leaving at each exit under this policy: the trunk up to it and the heads of the
    /// exits it evaluates on the way.
    pub fn exit_costs(&self, stages: &[StageCost]) -> Vec<u64> {
        let mut total = 0u64;
        stages
            .iter()
            .enumerate()
            .map(|(k, s)| {
                total += s.trunk;
                if self.evaluates(k, stages.len()) {
                    total += s.exit;
                }
                total
            })
            .collect()
    }

    /// Does a sample with this confidence leave at exit `k` of `num_exits`?
    pub fn exits_at(&self, k: usize, num_exits: usize, confidence: f32) -> bool {
        k + 1 >= num_exits || confidence > self.thresholds[k]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_are_in_unit_range_and_order_confidence() {
        let sure = [0.97, 0.01, 0.01, 0.01];
        let unsure = [0.25, 0.25, 0.25, 0.25];
        for c in [Criterion::MaxProb, Criterion::Entropy, Criterion::Margin] {
            let (a, b) = (c.confidence(&sure), c.confidence(&unsure));
            assert!(
                (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b),
                "{c:?}"
            );
            assert!(a > b, "{c:?}: {a} <= {b}");
        }
        assert!(Criterion::Entropy.confidence(&unsure).abs() < 1e-6);
        assert!((Criterion::Margin.confidence(&[0.5, 0.3, 0.2]) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn thresholds_are_validated() {
        let p = |t: Vec<f32>| ExitPolicy {
            criterion: Criterion::MaxProb,
            thresholds: t,
        };
        assert!(p(vec![0.9, 0.8, 0.7]).validate(4).is_ok());
        assert!(
            p(vec![0.9, 0.8])
                .validate(4)
                .unwrap_err()
                .contains("expected one per early exit")
        );
        assert!(
            p(vec![0.9, 1.5, 0.7])
                .validate(4)
                .unwrap_err()
                .contains("outside [0, 1]")
        );
        // 1.0 never lets a sample out early, even a saturated one.
        assert!(!p(vec![1.0]).exits_at(0, 2, 1.0));
        assert!(p(vec![1.0]).exits_at(1, 2, 0.0));
    }
}
