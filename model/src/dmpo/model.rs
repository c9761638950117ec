use burn::nn::LinearConfig;
use burn::prelude::*;

use super::cost::{StageCost, mlp_macs_per_token, vit_block_macs, vit_embed_macs};
use super::{Adapter, Bypass, CovarianceHead, DmpoConfig, EarlyHead, ExitHead, LinearHead};
use crate::dyt::{Dispatch, TokenDispatcher, hard_gate, mlp_on_kept_tokens, straight_through_gate};
use crate::vit::VisionTransformer;

/// A frozen ViT with adapters, bypass modules and one predictor per exit.
///
/// The backbone's own final norm and head are moved into the last exit's [`LinearHead`], so with
/// fresh (zero) adapters the last exit reproduces the backbone exactly.
#[derive(Module, Debug)]
pub struct DmpoModel<B: Backend> {
    /// Frozen: no parameter here receives a gradient.
    pub backbone: VisionTransformer<B>,
    /// One per block, or none when adapters are off.
    pub adapters: Vec<Adapter<B>>,
    /// DyT: one token dispatcher per block, or none when tokens are not dispatched.
    pub dispatchers: Vec<TokenDispatcher<B>>,
    /// DyT's gate temperature, target rate and loss weights (with the dispatchers).
    #[module(skip)]
    pub dispatch: Option<crate::dyt::DispatchConfig>,
    /// One per exit; `None` where the exit reads the trunk directly (always for the last).
    pub bypasses: Vec<Option<Bypass<B>>>,
    /// One per exit.
    pub heads: Vec<ExitHead<B>>,
    /// Exit k sits after block `exits[k]` (counted from 1).
    pub exits: Vec<usize>,
    pub detach_exit_inputs: bool,
}

/// Parameter counts, for the "trainable is a small fraction" budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamCounts {
    pub total: usize,
    pub trainable: usize,
}

impl DmpoConfig {
    /// Builds the multi-exit model around `backbone`, which is frozen. Errors if the exits do
    /// not fit the backbone.
    pub fn init<B: Backend>(
        &self,
        mut backbone: VisionTransformer<B>,
        device: &B::Device,
    ) -> Result<DmpoModel<B>, crate::ConfigError> {
        let depth = backbone.depth();
        self.validate(depth)?;
        let exits = self.exit_blocks(depth);
        let d = backbone.embed_dim();
        let prefix = backbone.num_prefix_tokens;
        let pool = backbone.global_pool;

        // The last exit is the backbone's own head, moved out so no parameter is shared.
        let freeze = |m: Option<burn::nn::LayerNorm<B>>| m.map(|n| n.no_grad());
        let classifier = match backbone.head.take() {
            Some(head) if head.weight.dims()[1] == self.num_classes => head,
            _ => LinearConfig::new(d, self.num_classes).init(device),
        };
        let last = LinearHead {
            norm: freeze(backbone.norm.take()),
            fc_norm: freeze(backbone.fc_norm.take()),
            classifier,
            pool,
            num_prefix_tokens: prefix,
            norm_eps: backbone.norm_eps,
        };
        let backbone = backbone.no_grad();

        let adapters = match &self.adapter {
            Some(a) => (0..depth)
                .map(|_| Adapter::new(d, a.dim, a.scale, device))
                .collect(),
            None => Vec::new(),
        };
        let dispatchers = match &self.dispatch {
            Some(dispatch) => {
                dispatch.validate()?;
                (0..depth)
                    .map(|_| TokenDispatcher::new(d, prefix, device))
                    .collect()
            }
            None => Vec::new(),
        };
        let early = exits.len() - 1;
        let mut bypasses: Vec<Option<Bypass<B>>> = (0..early)
            .map(|_| {
                self.bypass
                    .as_ref()
                    .map(|b| Bypass::new(d, b.dim.unwrap_or((d / 12).max(1)), b.scale, device))
            })
            .collect();
        bypasses.push(None);
        let cov = &self.covariance;
        let mut heads: Vec<ExitHead<B>> = (0..early)
            .map(|_| match self.early_head {
                EarlyHead::Covariance => ExitHead::Covariance(CovarianceHead::new(
                    d,
                    cov.dim.unwrap_or((d / 12).max(8)),
                    self.num_classes,
                    cov.iterations,
                    prefix,
                    cov.fuse_cls,
                    cov.eps,
                    device,
                )),
                EarlyHead::Linear => {
                    ExitHead::Linear(LinearHead::new(d, self.num_classes, pool, prefix, device))
                }
            })
            .collect();
        heads.push(ExitHead::Linear(last));
        Ok(DmpoModel {
            backbone,
            adapters,
            dispatchers,
            dispatch: self.dispatch.clone(),
            bypasses,
            heads,
            exits,
            detach_exit_inputs: self.detach_exit_inputs,
        })
    }
}

impl<B: Backend> DmpoModel<B> {
    pub fn num_exits(&self) -> usize {
        self.exits.len()
    }

    /// Images `[B, C, H, W]` → tokens entering block 0, `[B, T, D]`.
    pub fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        self.backbone.embed(images)
    }

    /// Whether the blocks dispatch tokens (DyT).
    pub fn dispatches(&self) -> bool {
        !self.dispatchers.is_empty()
    }

    /// Block `index` with its adapter, at inference: `[B, T, D]` → `[B, T, D]`. With
    /// dispatchers, the MLP runs on the kept tokens alone ([`Dispatch::Hard`]).
    pub fn forward_block(&self, index: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_block_with(index, x, Dispatch::Hard).0
    }

    /// Block `index` with its adapter and, if the model has them, its token dispatcher in mode
    /// `dispatch`. Returns the tokens `[B, T, D]` and the patch tokens' keep mask
    /// `[B, T − prefix]` (1 = through the MLP; `None` without a dispatcher or in `Complete`).
    pub fn forward_block_with(
        &self,
        index: usize,
        x: Tensor<B, 3>,
        dispatch: Dispatch,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 2>>) {
        let block = &self.backbone.blocks[index];
        let x = block.forward_attention_residual(x);
        let normed = block.norm2(x.clone());
        let (mlp, keep) = match (self.dispatchers.get(index), dispatch) {
            (Some(d), Dispatch::Sampled { temperature }) => {
                let m = straight_through_gate(d.logits(x.clone()), temperature);
                let mask = d.with_prefix(m.clone()).unsqueeze_dim::<3>(2);
                (block.mlp_branch(normed.clone()) * mask, Some(m))
            }
            (Some(d), Dispatch::Hard) => {
                let m = hard_gate(d.logits(x.clone())).float();
                let mlp = mlp_on_kept_tokens(block, normed.clone(), d.with_prefix(m.clone()));
                (mlp, Some(m))
            }
            _ => (block.mlp_branch(normed.clone()), None),
        };
        let x = match self.adapters.get(index) {
            Some(adapter) => x + mlp + adapter.forward(normed),
            None => x + mlp,
        };
        (x, keep)
    }

    /// The trunk of stage `k`: the blocks from the previous exit up to exit `k`.
    /// Tokens `[B, T, D]` → `[B, T, D]`; any subset of a batch may continue.
    pub fn forward_trunk(&self, k: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_trunk_with(k, x, Dispatch::Hard).0
    }

    /// [`forward_trunk`](Self::forward_trunk) in dispatch mode `dispatch`, with each block's
    /// keep mask (none without dispatchers or in `Complete`).
    pub fn forward_trunk_with(
        &self,
        k: usize,
        mut x: Tensor<B, 3>,
        dispatch: Dispatch,
    ) -> (Tensor<B, 3>, Vec<Tensor<B, 2>>) {
        let start = if k == 0 { 0 } else { self.exits[k - 1] };
        let mut masks = Vec::new();
        for i in start..self.exits[k] {
            let (y, keep) = self.forward_block_with(i, x, dispatch);
            masks.extend(keep);
            x = y;
        }
        (x, masks)
    }

    /// Exit `k`'s logits from the trunk tokens after its block: `[B, T, D]` → `[B, classes]`.
    pub fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2> {
        let h = if self.detach_exit_inputs && k + 1 < self.num_exits() {
            h.detach()
        } else {
            h
        };
        let z = match &self.bypasses[k] {
            Some(bypass) => bypass.forward(h),
            None => h,
        };
        self.heads[k].forward(z)
    }

    /// Stage `k` for staged inference: trunk then exit. Returns the tokens to continue with
    /// (`[B, T, D]`) and exit `k`'s logits (`[B, classes]`).
    pub fn forward_stage(&self, k: usize, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 2>) {
        let h = self.forward_trunk(k, x);
        let logits = self.forward_exit(k, h.clone());
        (h, logits)
    }

    /// Every exit's logits: images `[B, C, H, W]` → one `[B, classes]` per exit (dispatched
    /// tokens, if any, skip their MLPs as at inference).
    pub fn forward_exits(&self, images: Tensor<B, 4>) -> Vec<Tensor<B, 2>> {
        self.forward_exits_with(images, Dispatch::Hard).0
    }

    /// Every exit's logits in dispatch mode `dispatch`, and every block's keep mask, for
    /// training DyT: `Sampled` for the dispatched model, `Complete` for the complete one.
    pub fn forward_exits_with(
        &self,
        images: Tensor<B, 4>,
        dispatch: Dispatch,
    ) -> (Vec<Tensor<B, 2>>, Vec<Tensor<B, 2>>) {
        let mut x = self.embed(images);
        let mut logits = Vec::with_capacity(self.num_exits());
        let mut masks = Vec::new();
        for k in 0..self.num_exits() {
            let (h, m) = self.forward_trunk_with(k, x, dispatch);
            logits.push(self.forward_exit(k, h.clone()));
            masks.extend(m);
            x = h;
        }
        (logits, masks)
    }

    /// The MACs one patch token saves in a block by skipping the MLP (0 without dispatchers).
    pub fn skipped_token_macs(&self) -> u64 {
        if !self.dispatches() {
            return 0;
        }
        let [d, hidden] = self.backbone.blocks[0].mlp.fc1.weight.dims();
        mlp_macs_per_token(d as u64, hidden as u64)
    }

    /// Patch tokens, all tokens (patches and prefix) and width, for the cost formulas.
    fn token_counts(&self) -> (u64, u64, u64) {
        let patches = self.backbone.num_patches() as u64;
        let prefix = self.backbone.num_prefix_tokens as u64;
        (patches, patches + prefix, self.backbone.embed_dim() as u64)
    }

    /// Per-image cost of each stage, in MACs (fvcore convention).
    pub fn stage_costs(&self) -> Vec<StageCost> {
        let (patches, tokens, d) = self.token_counts();
        let hidden = self.backbone.blocks[0].mlp.fc1.weight.dims()[1] as u64;
        let [fan_in, _] = self.backbone.patch_embed.proj.weight.dims();
        let embed = patches * fan_in as u64 * d;
        // With every token kept; a sample's skipped tokens save `skipped_token_macs` each.
        let block = vit_block_macs(tokens, d, hidden)
            + self.adapters.first().map_or(0, |a| a.macs(tokens))
            + if self.dispatches() { patches * d } else { 0 };
        let mut prev = 0;
        self.exits
            .iter()
            .enumerate()
            .map(|(k, &e)| {
                let trunk = (e - prev) as u64 * block + if k == 0 { embed } else { 0 };
                prev = e;
                let bypass = self.bypasses[k].as_ref().map_or(0, |b| b.macs(tokens));
                StageCost {
                    trunk,
                    exit: bypass + self.heads[k].macs(tokens),
                }
            })
            .collect()
    }

    /// The full-depth backbone's cost alone (patch embedding, blocks, head), in MACs: the
    /// reference a compute budget is a fraction of.
    pub fn backbone_macs(&self) -> u64 {
        let (patches, tokens, d) = self.token_counts();
        let hidden = self.backbone.blocks[0].mlp.fc1.weight.dims()[1] as u64;
        let p = self.backbone.patch_embed.patch_size as u64;
        let in_chans = self.backbone.patch_embed.proj.weight.dims()[0] as u64 / (p * p);
        let head = match self.heads.last() {
            Some(ExitHead::Linear(h)) => {
                let [i, o] = h.classifier.weight.dims();
                (i * o) as u64
            }
            _ => 0,
        };
        vit_embed_macs(patches, in_chans, p, d)
            + self.backbone.depth() as u64 * vit_block_macs(tokens, d, hidden)
            + head
    }

    /// Total and trainable parameter counts. Counted by structure (the backbone and the norms
    /// taken from it are frozen), since plain backends do not track `require_grad`.
    pub fn param_counts(&self) -> ParamCounts {
        let frozen_norms: usize = match self.heads.last() {
            Some(ExitHead::Linear(h)) => {
                h.norm.as_ref().map_or(0, |n| n.num_params())
                    + h.fc_norm.as_ref().map_or(0, |n| n.num_params())
            }
            _ => 0,
        };
        let total = self.num_params();
        ParamCounts {
            total,
            trainable: total - self.backbone.num_params() - frozen_norms,
        }
    }
}
