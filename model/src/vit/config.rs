use burn::config::Config;
use burn::module::Param;
use burn::prelude::*;

use super::VisionTransformer;
use super::block::BlockConfig;
use super::patch_embed::PatchEmbedConfig;

/// How the token sequence becomes one feature vector (timm's `global_pool`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    /// The class token (`x[:, 0]`); requires `class_token`.
    Token,
    /// The mean of the patch tokens (prefix tokens excluded).
    Avg,
}

/// Architecture of a [`VisionTransformer`], field for field what timm's constructor takes.
///
/// `fc_norm` is already resolved as timm resolves it: when true the final norm is absent and a
/// LayerNorm is applied after pooling instead (timm's default for `global_pool="avg"`).
#[derive(Config, Debug, PartialEq)]
pub struct VitConfig {
    /// Square input resolution in pixels; must be a multiple of `patch_size`.
    #[config(default = 224)]
    pub img_size: usize,
    #[config(default = 16)]
    pub patch_size: usize,
    #[config(default = 3)]
    pub in_chans: usize,
    #[config(default = 768)]
    pub embed_dim: usize,
    #[config(default = 12)]
    pub depth: usize,
    #[config(default = 12)]
    pub num_heads: usize,
    /// Hidden width of each block's MLP (timm: `int(embed_dim * mlp_ratio)`).
    #[config(default = 3072)]
    pub mlp_hidden_dim: usize,
    #[config(default = true)]
    pub qkv_bias: bool,
    #[config(default = true)]
    pub class_token: bool,
    /// Register tokens (Darcet et al., "Vision Transformers Need Registers"; timm's
    /// `reg_tokens`, DINOv2's `_reg4` models): learned prefix tokens after the class token,
    /// skipped by pooling and by the exits.
    #[config(default = 0)]
    pub reg_tokens: usize,
    /// The position embedding covers the patches only; prefix tokens get none (timm's
    /// `no_embed_class`, set by DINOv2's register models).
    #[config(default = false)]
    pub no_embed_class: bool,
    #[config(default = "GlobalPool::Token")]
    pub global_pool: GlobalPool,
    #[config(default = false)]
    pub fc_norm: bool,
    /// LayerScale initial value; `None` means no LayerScale (timm's `init_values=None`).
    #[config(default = "None")]
    pub init_values: Option<f64>,
    /// Classes of the linear head; 0 means no head (features only).
    #[config(default = 1000)]
    pub num_classes: usize,
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl VitConfig {
    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.img_size / self.patch_size
    }

    /// Patch tokens per image.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Tokens that are not patches: the class token, when present, then the registers.
    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }

    /// Positions the position embedding holds: every token, or the patches only
    /// (`no_embed_class`).
    pub fn num_embedded_tokens(&self) -> usize {
        if self.no_embed_class {
            self.num_patches()
        } else {
            self.num_tokens()
        }
    }

    /// Tokens per image inside the blocks.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + self.num_prefix_tokens()
    }

    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// One image's full forward pass in multiply-accumulates (patch embedding, blocks, head;
    /// the convention of `dmpo::cost`): what a throughput becomes GFLOP/s with.
    pub fn macs(&self) -> u64 {
        use crate::dmpo::{vit_block_macs, vit_embed_macs};
        let d = self.embed_dim as u64;
        vit_embed_macs(
            self.num_patches() as u64,
            self.in_chans as u64,
            self.patch_size as u64,
            d,
        ) + self.depth as u64
            * vit_block_macs(self.num_tokens() as u64, d, self.mlp_hidden_dim as u64)
            + d * self.num_classes as u64
    }

    /// Checks the invariants timm asserts in its constructor, with a message a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0
            || self.img_size == 0
            || !self.img_size.is_multiple_of(self.patch_size)
        {
            return Err(format!(
                "img_size {} must be a positive multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "embed_dim {} must be divisible by num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.depth == 0 {
            return Err("depth must be at least 1".into());
        }
        if self.global_pool == GlobalPool::Token && !self.class_token {
            return Err("global_pool \"token\" needs class_token = true".into());
        }
        Ok(())
    }

    /// Builds the model with timm-like random initialisation.
    ///
    /// # Panics
    /// If [`VitConfig::validate`] fails; call it first on configs that come from users.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VisionTransformer<B> {
        if let Err(msg) = self.validate() {
            panic!("invalid VitConfig: {msg}");
        }
        let d = self.embed_dim;
        let patch_embed = PatchEmbedConfig {
            in_chans: self.in_chans,
            patch_size: self.patch_size,
            embed_dim: d,
        }
        .init(device);
        let normal = |shape: [usize; 3]| {
            Tensor::<B, 3>::random(shape, burn::tensor::Distribution::Normal(0.0, 0.02), device)
        };
        let cls_token = self
            .class_token
            .then(|| Param::from_tensor(normal([1, 1, d])));
        let reg_token =
            (self.reg_tokens > 0).then(|| Param::from_tensor(normal([1, self.reg_tokens, d])));
        let pos_embed = Param::from_tensor(normal([1, self.num_embedded_tokens(), d]));
        let block = BlockConfig {
            embed_dim: d,
            num_heads: self.num_heads,
            mlp_hidden_dim: self.mlp_hidden_dim,
            qkv_bias: self.qkv_bias,
            init_values: self.init_values,
            norm_eps: self.norm_eps,
        };
        let blocks = (0..self.depth).map(|_| block.init(device)).collect();
        let layer_norm = || {
            burn::nn::LayerNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init(device)
        };
        let (norm, fc_norm) = if self.fc_norm {
            (None, Some(layer_norm()))
        } else {
            (Some(layer_norm()), None)
        };
        let head = (self.num_classes > 0)
            .then(|| burn::nn::LinearConfig::new(d, self.num_classes).init(device));
        VisionTransformer {
            patch_embed,
            cls_token,
            reg_token,
            pos_embed,
            blocks,
            norm,
            fc_norm,
            head,
            global_pool: self.global_pool,
            num_prefix_tokens: self.num_prefix_tokens(),
            no_embed_class: self.no_embed_class,
            norm_eps: self.norm_eps,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vit_b16_costs_what_fvcore_counts() {
        // 17.56 G in the layers `dmpo::cost` counts (fvcore, which also counts a few
        // element-wise ops, prints 17.58 G for timm's vit_base_patch16_224).
        let macs = crate::vit::preset("vit_base_patch16_224").unwrap().macs();
        assert!((17.55e9..17.57e9).contains(&(macs as f64)), "{macs}");
    }
}
