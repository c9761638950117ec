use burn::prelude::*;
use dmpo_model::dmpo::{DmpoModel, StageCost};

/// What the engine needs from a multi-exit model: the staged API. Implemented by
/// [`DmpoModel`]; a trait so the engine's bookkeeping can be tested on exits whose confidences
/// are set by hand.
pub trait MultiExit<B: Backend> {
    fn num_exits(&self) -> usize;
    /// Images `[B, C, H, W]` → tokens `[B, T, D]`.
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3>;
    /// Stage `k`'s trunk on any subset of a batch: `[b, T, D]` → `[b, T, D]`.
    fn forward_trunk(&self, k: usize, x: Tensor<B, 3>) -> Tensor<B, 3>;
    /// Exit `k`'s logits: `[b, T, D]` → `[b, classes]`.
    fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2>;
    /// Per-image MACs of each stage.
    fn stage_costs(&self) -> Vec<StageCost>;
}

impl<B: Backend> MultiExit<B> for DmpoModel<B> {
    fn num_exits(&self) -> usize {
        DmpoModel::num_exits(self)
    }
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        DmpoModel::embed(self, images)
    }
    fn forward_trunk(&self, k: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        DmpoModel::forward_trunk(self, k, x)
    }
    fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2> {
        DmpoModel::forward_exit(self, k, h)
    }
    fn stage_costs(&self) -> Vec<StageCost> {
        DmpoModel::stage_costs(self)
    }
}

/// Cost of leaving at each exit: the trunk up to it plus every bypass and head evaluated so far.
pub fn cumulative_costs(stages: &[StageCost]) -> Vec<u64> {
    stages
        .iter()
        .scan(0u64, |acc, s| {
            *acc += s.total();
            Some(*acc)
        })
        .collect()
}
