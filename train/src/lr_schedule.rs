use burn::optim::LearningRate;
use burn::optim::lr_scheduler::LrScheduler;
use burn::prelude::*;

/// Linear warm-up from `base / warmup` to `base`, then cosine down to `min` (timm's recipe),
/// per optimiser step.
#[derive(Debug, Clone)]
pub struct WarmupCosine {
    pub base: f64,
    pub min: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    step: usize,
}

impl WarmupCosine {
    pub fn new(base: f64, min: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self {
            base,
            min,
            warmup_steps,
            total_steps: total_steps.max(1),
            step: 0,
        }
    }

    /// The rate at step `s` (from 0).
    pub fn at(&self, s: usize) -> f64 {
        if s < self.warmup_steps {
            return self.base * (s + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((s - self.warmup_steps) as f64 / span).min(1.0);
        self.min + 0.5 * (self.base - self.min) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let lr = self.at(self.step);
        self.step += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, step: usize) -> Self {
        self.step = step;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_by_cosine_to_the_minimum() {
        let s = WarmupCosine::new(1e-3, 1e-5, 10, 110);
        assert!((s.at(0) - 1e-4).abs() < 1e-12);
        assert!((s.at(9) - 1e-3).abs() < 1e-12);
        assert!((s.at(10) - 1e-3).abs() < 1e-12);
        assert!((s.at(60) - (1e-5 + 0.5 * (1e-3 - 1e-5))).abs() < 1e-12);
        assert!((s.at(110) - 1e-5).abs() < 1e-12);
        assert!(s.at(35) > s.at(85));
    }
}
