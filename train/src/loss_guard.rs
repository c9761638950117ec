//! Stopping a run at the first non-finite loss, before it can reach a checkpoint.

use burn::prelude::*;
use burn::train::Interrupter;

/// Checks each training step's loss. At the first NaN or infinity it skips that step's update
/// and tells the Learner to stop: the Learner then ends the epoch without validating or writing
/// a checkpoint, so the newest checkpoint on disk is the last good state to `--resume` from.
///
/// The check reads one scalar back per step (the metrics read it anyway).
#[derive(Clone, Default)]
pub struct LossGuard {
    interrupter: Interrupter,
}

impl core::fmt::Debug for LossGuard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LossGuard")
            .field("tripped", &self.tripped())
            .finish()
    }
}

impl LossGuard {
    /// Trips the guard if `loss` is not finite.
    pub fn check<B: Backend>(&self, loss: &Tensor<B, 1>) {
        if self.tripped() {
            return;
        }
        let value: f64 = loss.clone().into_scalar().elem();
        if !value.is_finite() {
            self.interrupter
                .stop(Some(&format!("the training loss became {value}")));
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
