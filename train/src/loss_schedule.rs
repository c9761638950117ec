use burn::config::Config;

/// The exit weights of phase two.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PhaseTwo {
    /// Every exit weighs the same.
    Uniform,
    /// Weights fall with depth (the mirror image of phase one).
    Decreasing,
}

/// How the exits' cross-entropies are weighed over training: `L = Σ_k w_k(t) · CE_k`, weights
/// normalised to sum to 1.
///
/// DMPO's two phases [paper]: first the deep exits dominate (weights grow with the exit's depth)
/// so early stages keep learning to *represent*; from `switch` (a fraction of the epochs) the
/// weights move toward the early exits so they learn to *discriminate* [default: hard switch at
/// half the epochs, then uniform].
#[derive(Config, Debug, PartialEq)]
pub struct LossSchedule {
    /// Two phases (DMPO) or one uniform phase (the ablation / plain multi-exit baseline).
    #[config(default = true)]
    pub two_phase: bool,
    /// Fraction of the epochs spent in phase one.
    #[config(default = 0.5)]
    pub switch: f64,
    #[config(default = "PhaseTwo::Uniform")]
    pub phase_two: PhaseTwo,
}

impl LossSchedule {
    /// The one-phase uniform schedule.
    pub fn uniform() -> Self {
        Self::new().with_two_phase(false)
    }

    /// Whether `epoch` (from 0) of `num_epochs` is in phase one.
    pub fn in_phase_one(&self, epoch: usize, num_epochs: usize) -> bool {
        self.two_phase && (epoch as f64) < self.switch * num_epochs as f64
    }

    /// Exit weights for `epoch` (from 0) of `num_epochs`, for exits after blocks `exit_blocks`.
    pub fn weights(&self, epoch: usize, num_epochs: usize, exit_blocks: &[usize]) -> Vec<f32> {
        let raw: Vec<f64> = if self.in_phase_one(epoch, num_epochs) {
            exit_blocks.iter().map(|&b| b as f64).collect()
        } else if self.two_phase && self.phase_two == PhaseTwo::Decreasing {
            let last = exit_blocks.last().copied().unwrap_or(1) as f64;
            exit_blocks.iter().map(|&b| last + 1.0 - b as f64).collect()
        } else {
            vec![1.0; exit_blocks.len()]
        };
        let total: f64 = raw.iter().sum();
        raw.iter().map(|w| (w / total) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn two_phase_weights_favour_depth_then_become_uniform() {
        let s = LossSchedule::new();
        let exits = [3, 6, 9, 12];
        for epoch in 0..5 {
            assert!(
                close(&s.weights(epoch, 10, &exits), &[0.1, 0.2, 0.3, 0.4]),
                "epoch {epoch}"
            );
        }
        for epoch in 5..10 {
            assert!(
                close(&s.weights(epoch, 10, &exits), &[0.25; 4]),
                "epoch {epoch}"
            );
        }
    }

    #[test]
    fn decreasing_phase_two_and_uniform_ablation() {
        let s = LossSchedule::new()
            .with_phase_two(PhaseTwo::Decreasing)
            .with_switch(0.3);
        assert!(close(&s.weights(2, 10, &[2, 4]), &[1.0 / 3.0, 2.0 / 3.0]));
        assert!(close(&s.weights(3, 10, &[2, 4]), &[3.0 / 4.0, 1.0 / 4.0]));
        let u = LossSchedule::uniform();
        for epoch in [0, 9] {
            assert!(close(&u.weights(epoch, 10, &[2, 4, 6]), &[1.0 / 3.0; 3]));
        }
    }

    #[test]
    fn weights_always_sum_to_one() {
        let s = LossSchedule::new();
        for epoch in 0..7 {
            let w = s.weights(epoch, 7, &[1, 2, 5, 7]);
            assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
