use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use super::{Block, GlobalPool, PatchEmbed};
use crate::kernels;

/// timm's `VisionTransformer`: patch embedding, optional class token, learned absolute position
/// embedding, pre-norm blocks, final norm (or `fc_norm` after pooling), pooling, linear head.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    pub patch_embed: PatchEmbed<B>,
    /// `[1, 1, D]`.
    pub cls_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, R, D]` register tokens, after the class token.
    pub reg_token: Option<Param<Tensor<B, 3>>>,
    /// `[1, T, D]`, including the prefix tokens' positions unless `no_embed_class`.
    pub pos_embed: Param<Tensor<B, 3>>,
    pub blocks: Vec<Block<B>>,
    /// Final norm on all tokens; absent when `fc_norm` is used (timm makes it `Identity`).
    pub norm: Option<LayerNorm<B>>,
    /// Norm applied after pooling.
    pub fc_norm: Option<LayerNorm<B>>,
    /// `[D, classes]`; absent for a features-only model.
    pub head: Option<Linear<B>>,
    pub global_pool: GlobalPool,
    pub num_prefix_tokens: usize,
    /// The position embedding is added to the patches before the prefix tokens are prepended.
    pub no_embed_class: bool,
    /// `norm`'s and `fc_norm`'s epsilon, for [`kernels::layer_norm`].
    pub norm_eps: f64,
}

/// Everything one full-depth pass produces, for checking against timm and for the exits.
#[derive(Debug, Clone)]
pub struct VitOutput<B: Backend> {
    /// Each block's output tokens, `[B, T, D]`, before the final norm.
    pub blocks: Vec<Tensor<B, 3>>,
    /// timm's `forward_features`: the last block's tokens after the final norm, `[B, T, D]`.
    pub features: Tensor<B, 3>,
    /// Pooled (and `fc_norm`ed) features fed to the head, `[B, D]`.
    pub pre_logits: Tensor<B, 2>,
    /// `[B, classes]` (equal to `pre_logits` when there is no head).
    pub logits: Tensor<B, 2>,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn embed_dim(&self) -> usize {
        self.pos_embed.dims()[2]
    }

    /// Patch tokens per image: the position embedding's rows, less the prefix tokens' unless
    /// `no_embed_class` (whose position embedding holds the patches alone).
    pub fn num_patches(&self) -> usize {
        let rows = self.pos_embed.dims()[1];
        if self.no_embed_class {
            rows
        } else {
            rows - self.num_prefix_tokens
        }
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }

    /// Whether images of shape `[B, C, H, W]` fit this model: its channels, sides that are
    /// multiples of the patch size, and as many patches as the position embedding has rows.
    /// An app checks before [`Self::embed`], which would otherwise fail inside the backend.
    pub fn check_input(&self, dims: [usize; 4]) -> Result<(), String> {
        let [b, c, h, w] = dims;
        let p = self.patch_embed.patch_size;
        let channels = self.patch_embed.proj.weight.dims()[0] / (p * p);
        let side = ((self.num_patches() as f64).sqrt().round() as usize) * p;
        if b == 0
            || c != channels
            || h % p != 0
            || w % p != 0
            || (h / p) * (w / p) != self.num_patches()
        {
            return Err(format!(
                "images of shape [{b}, {c}, {h}, {w}] do not fit this model, which takes                  [batch ≥ 1, {channels}, {side}, {side}]"
            ));
        }
        Ok(())
    }

    /// Images `[B, C, H, W]` → the tokens entering block 0, `[B, T, D]`: patches, class and
    /// register tokens prepended, position embedding added (timm's `_pos_embed`: to the
    /// patches alone, before prepending, when `no_embed_class`).
    pub fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let patches = self.patch_embed.forward(images);
        let prefix: Vec<Tensor<B, 3>> = self
            .cls_token
            .iter()
            .chain(&self.reg_token)
            .map(|t| t.val())
            .collect();
        kernels::embed_tokens(patches, &prefix, self.pos_embed.val(), !self.no_embed_class)
    }

    /// Runs block `index` on `[B, T, D]` tokens.
    pub fn forward_block(&self, index: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.blocks[index].forward(x)
    }

    /// The final norm (identity when the model uses `fc_norm`): `[B, T, D]` → `[B, T, D]`.
    pub fn final_norm(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.norm {
            Some(norm) => kernels::layer_norm(norm, self.norm_eps, x),
            None => x,
        }
    }

    /// Pools normed tokens `[B, T, D]` into `[B, D]`, then applies `fc_norm` if present.
    pub fn pool(&self, features: Tensor<B, 3>) -> Tensor<B, 2> {
        let pooled = pool_tokens(features, self.global_pool, self.num_prefix_tokens);
        match &self.fc_norm {
            Some(norm) => kernels::layer_norm(norm, self.norm_eps, pooled),
            None => pooled,
        }
    }

    /// `[B, D]` → `[B, classes]`.
    pub fn forward_head(&self, pre_logits: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.head {
            Some(head) => head.forward(pre_logits),
            None => pre_logits,
        }
    }

    /// timm's `forward_features`: images `[B, C, H, W]` → normed tokens `[B, T, D]`.
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self
            .blocks
            .iter()
            .fold(self.embed(images), |x, block| block.forward(x));
        self.final_norm(x)
    }

    /// Images `[B, C, H, W]` → logits `[B, classes]`.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_head(self.pool(self.forward_features(images)))
    }

    /// One full pass that keeps every intermediate a user or a test wants to inspect.
    pub fn forward_all(&self, images: Tensor<B, 4>) -> VitOutput<B> {
        let mut x = self.embed(images);
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            x = block.forward(x);
            blocks.push(x.clone());
        }
        let features = self.final_norm(x);
        let pre_logits = self.pool(features.clone());
        let logits = self.forward_head(pre_logits.clone());
        VitOutput {
            blocks,
            features,
            pre_logits,
            logits,
        }
    }
}

/// timm's pooling: the class token (`Token`) or the mean of the patch tokens, skipping the
/// `num_prefix_tokens` leading ones (`Avg`). `[B, T, D]` → `[B, D]`.
pub fn pool_tokens<B: Backend>(
    tokens: Tensor<B, 3>,
    pool: GlobalPool,
    num_prefix_tokens: usize,
) -> Tensor<B, 2> {
    let [b, t, d] = tokens.dims();
    match pool {
        GlobalPool::Token => tokens.narrow(1, 0, 1).reshape([b, d]),
        GlobalPool::Avg => tokens
            .narrow(1, num_prefix_tokens, t - num_prefix_tokens)
            .mean_dim(1)
            .reshape([b, d]),
    }
}
