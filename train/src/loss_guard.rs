//! Stopping a run at the first non-finite loss, before it can reach a checkpoint.

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::train::Interrupter;

/// Checks the training steps' losses. At a NaN or infinity it tells the Learner to stop and
/// skips every later update: the Learner ends the epoch without validating or writing a
/// checkpoint, so the newest checkpoint on disk is the last good state to `--resume` from.
///
/// Reading a loss back is a device sync, which a GPU pays on every step. So the guard can sum
/// the losses on the device (a NaN or infinity survives any sum) and read the sum back every
/// `every` steps and always on the last step of an epoch, before the Learner can checkpoint.
/// `every = 1` (the default, right for the CPU backends where a read costs nothing) stops at
/// the very step; with `every > 1` up to `every − 1` poisoned updates reach the weights in
/// memory, never a checkpoint, and the run ends in an error either way.
#[derive(Clone)]
pub struct LossGuard {
    interrupter: Interrupter,
    every: usize,
    pending: Arc<Mutex<Pending>>,
}

/// Losses summed on the device since the last read (a `Tensor<B, 1>` of the trainee's
/// backend, type-erased so the guard stays one type for every backend).
#[derive(Default)]
struct Pending {
    sum: Option<Box<dyn Any + Send>>,
    steps: usize,
}

impl Default for LossGuard {
    fn default() -> Self {
        Self::every(1)
    }
}

impl core::fmt::Debug for LossGuard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LossGuard")
            .field("every", &self.every)
            .field("tripped", &self.tripped())
            .finish()
    }
}

impl LossGuard {
    /// A guard that reads the losses back every `every` steps (at least 1) and at each
    /// epoch's last step.
    pub fn every(every: usize) -> Self {
        Self {
            interrupter: Interrupter::default(),
            every: every.max(1),
            pending: Arc::default(),
        }
    }

    /// Adds one step's `loss`; trips the guard if a read shows a non-finite value.
    /// `ends_epoch`: the epoch's last step, after which the Learner may checkpoint.
    pub fn check<B: Backend>(&self, loss: &Tensor<B, 1>, ends_epoch: bool) {
        if self.tripped() {
            return;
        }
        let mut pending = self.pending.lock().expect("loss guard lock");
        let loss = loss.clone().detach();
        let sum = match pending.sum.take() {
            Some(previous) => match previous.downcast::<Tensor<B, 1>>() {
                Ok(previous) => *previous + loss,
                Err(_) => loss,
            },
            None => loss,
        };
        pending.steps += 1;
        if pending.steps < self.every && !ends_epoch {
            pending.sum = Some(Box::new(sum));
            return;
        }
        let steps = std::mem::take(&mut pending.steps);
        drop(pending);
        let value: f64 = sum.into_scalar().elem();
        if !value.is_finite() {
            let reason = if steps == 1 {
                format!("the training loss became {value}")
            } else {
                format!("the training loss became {value} within the last {steps} steps")
            };
            self.interrupter.stop(Some(&reason));
        }
    }

    /// True once a non-finite loss was seen.
    pub fn tripped(&self) -> bool {
        self.interrupter.should_stop()
    }

    /// Why the run stopped, if it did.
    pub fn reason(&self) -> Option<String> {
        self.tripped()
            .then(|| self.interrupter.get_message())
            .flatten()
    }

    /// The Learner's stop switch this guard pulls.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    fn loss(v: f32) -> Tensor<NdArray, 1> {
        Tensor::from_data([v], &Default::default())
    }

    #[test]
    fn every_step_trips_at_once() {
        let g = LossGuard::default();
        g.check(&loss(1.0), false);
        assert!(!g.tripped());
        g.check(&loss(f32::NAN), false);
        assert!(g.tripped());
        assert!(g.reason().unwrap().contains("NaN"));
    }

    #[test]
    fn a_periodic_guard_reads_at_its_period_and_at_an_epochs_end() {
        let g = LossGuard::every(4);
        g.check(&loss(f32::INFINITY), false);
        g.check(&loss(1.0), false);
        assert!(!g.tripped(), "not read yet");
        g.check(&loss(1.0), false);
        g.check(&loss(1.0), false);
        assert!(g.tripped(), "read at the 4th step");
        assert!(g.reason().unwrap().contains("within the last 4 steps"));

        let g = LossGuard::every(100);
        g.check(&loss(1.0), false);
        g.check(&loss(f32::NAN), true);
        assert!(g.tripped(), "always read at the end of an epoch");

        let g = LossGuard::every(3);
        for _ in 0..7 {
            g.check(&loss(2.0), false);
        }
        g.check(&loss(2.0), true);
        assert!(!g.tripped(), "finite losses never trip it");
    }
}
