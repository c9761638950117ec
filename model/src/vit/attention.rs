use burn::prelude::*;

use crate::kernels::{self, Activation};

/// Multi-head self-attention with one fused `qkv` projection, as timm's `Attention`.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `[D, 3·D]`; output columns are q, k, v, each split into heads.
    pub qkv: burn::nn::Linear<B>,
    pub proj: burn::nn::Linear<B>,
    pub num_heads: usize,
}

impl<B: Backend> Attention<B> {
    pub fn new(embed_dim: usize, num_heads: usize, qkv_bias: bool, device: &B::Device) -> Self {
        Self {
            qkv: burn::nn::LinearConfig::new(embed_dim, 3 * embed_dim)
                .with_bias(qkv_bias)
                .init(device),
            proj: burn::nn::LinearConfig::new(embed_dim, embed_dim).init(device),
            num_heads,
        }
    }

    /// `x`: `[B, N, D]` → `[B, N, D]`.
    ///
    /// softmax(q·kᵀ/√d)·v per head: through a backend's fused kernel when it has one (no copies
    /// to split and merge heads), else Burn's `attention` op (see [`crate::kernels`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let qkv = kernels::linear(&self.qkv, x, Activation::None);
        let out = kernels::qkv_attention(qkv, self.num_heads);
        kernels::linear(&self.proj, out, Activation::None)
    }
}
