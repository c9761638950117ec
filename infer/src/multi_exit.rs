use burn::prelude::*;
use dmpo_model::dmpo::{DmpoModel, StageCost};

/// What the engine needs from a multi-exit model: the staged API. Implemented by
/// [`DmpoModel`]; a trait so the engine's bookkeeping can be tested on exits whose confidences
/// are set by hand.
pub trait MultiExit<B: Backend> {
    fn num_exits(&self) -> usize;
    /// Whether images of shape `[B, C, H, W]` fit the model (the reason if not).
    fn check_input(&self, _dims: [usize; 4]) -> Result<(), String> {
        Ok(())
    }
    /// Images `[B, C, H, W]` → tokens `[B, T, D]`.
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3>;
    /// Stage `k`'s trunk on any subset of a batch: `[b, T, D]` → `[b, T, D]`.
    fn forward_trunk(&self, k: usize, x: Tensor<B, 3>) -> Tensor<B, 3>;
    /// Exit `k`'s logits: `[b, T, D]` → `[b, classes]`.
    fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2>;
    /// Per-image MACs of each stage, every token through every MLP.
    fn stage_costs(&self) -> Vec<StageCost>;
    /// Stage `k`'s trunk, with the MACs each sample saved in it by skipping tokens (DyT):
    /// `[b]`, or `None` when the model skips nothing.
    fn forward_trunk_counted(&self, k: usize, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<Vec<u64>>) {
        (self.forward_trunk(k, x), None)
    }
    /// What one sample would save at full depth if every patch token skipped every MLP.
    fn skippable_macs(&self) -> u64 {
        0
    }
    /// The bare backbone's MACs per image, what budgets are fractions of (by default the whole
    /// trunk's).
    fn backbone_macs(&self) -> u64 {
        self.stage_costs().iter().map(|s| s.trunk).sum()
    }
}

impl<B: Backend> MultiExit<B> for DmpoModel<B> {
    fn num_exits(&self) -> usize {
        DmpoModel::num_exits(self)
    }
    fn check_input(&self, dims: [usize; 4]) -> Result<(), String> {
        self.backbone.check_input(dims)
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
    fn forward_trunk_counted(&self, k: usize, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<Vec<u64>>) {
        if !self.dispatches() {
            return (DmpoModel::forward_trunk(self, k, x), None);
        }
        let (h, masks) = self.forward_trunk_with(k, x, dmpo_model::dyt::Dispatch::Hard);
        let b = h.dims()[0];
        let per_token = self.skipped_token_macs();
        let mut saved = vec![0u64; b];
        for mask in masks {
            let patches = mask.dims()[1];
            let kept: Vec<f32> = mask
                .sum_dim(1)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32");
            for (s, k) in saved.iter_mut().zip(kept) {
                *s += (patches as u64 - k.round() as u64) * per_token;
            }
        }
        (h, Some(saved))
    }
    fn backbone_macs(&self) -> u64 {
        DmpoModel::backbone_macs(self)
    }
    fn skippable_macs(&self) -> u64 {
        let patches = self.backbone.num_patches() as u64;
        self.backbone.depth() as u64 * patches * self.skipped_token_macs()
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
