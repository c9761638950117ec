use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;

use super::{Attention, LayerScale, Mlp};
use crate::kernels;

/// Settings of one [`Block`].
#[derive(Debug, Clone)]
pub struct BlockConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub mlp_hidden_dim: usize,
    pub qkv_bias: bool,
    pub init_values: Option<f64>,
    pub norm_eps: f64,
}

impl BlockConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let d = self.embed_dim;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.norm_eps)
                .init::<B>(device)
        };
        let ls = || self.init_values.map(|v| LayerScale::<B>::new(d, v, device));
        Block {
            norm1: norm(),
            attn: Attention::new(d, self.num_heads, self.qkv_bias, device),
            ls1: ls(),
            norm2: norm(),
            mlp: Mlp::new(d, self.mlp_hidden_dim, device),
            ls2: ls(),
            norm_eps: self.norm_eps,
        }
    }
}

/// Pre-norm transformer block: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: Attention<B>,
    pub ls1: Option<LayerScale<B>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ls2: Option<LayerScale<B>>,
    /// The two norms' epsilon, for [`kernels::layer_norm`] (Burn's `LayerNorm` keeps its own
    /// private).
    pub norm_eps: f64,
}

impl<B: Backend> Block<B> {
    /// `x`: `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.forward_attention_residual(x);
        x.clone() + self.mlp_branch(self.norm2(x))
    }

    /// The attention half of the block: `x + ls1(attn(norm1(x)))`, `[B, N, D]` → `[B, N, D]`.
    pub fn forward_attention_residual(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x.clone() + scale(&self.ls1, self.attn.forward(self.norm1(x)))
    }

    /// `norm1(x)`, fused where the backend has a LayerNorm kernel.
    pub fn norm1<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::layer_norm(&self.norm1, self.norm_eps, x)
    }

    /// `norm2(x)`, fused where the backend has a LayerNorm kernel.
    pub fn norm2<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::layer_norm(&self.norm2, self.norm_eps, x)
    }

    /// The MLP branch on already normed tokens, `ls2(mlp(normed))`: `[B, N, D]` → `[B, N, D]`.
    /// Exposed so a parallel adapter can share `norm2(x)` with it.
    pub fn mlp_branch(&self, normed: Tensor<B, 3>) -> Tensor<B, 3> {
        scale(&self.ls2, self.mlp.forward(normed))
    }
}

fn scale<B: Backend>(ls: &Option<LayerScale<B>>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match ls {
        Some(ls) => ls.forward(x),
        None => x,
    }
}
