use burn::prelude::*;

use crate::kernels::{self, Activation};

/// Two-layer MLP with exact (erf) GELU, as timm's `Mlp`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: burn::nn::Linear<B>,
    pub fc2: burn::nn::Linear<B>,
}

impl<B: Backend> Mlp<B> {
    pub fn new(embed_dim: usize, hidden_dim: usize, device: &B::Device) -> Self {
        Self {
            fc1: burn::nn::LinearConfig::new(embed_dim, hidden_dim).init(device),
            fc2: burn::nn::LinearConfig::new(hidden_dim, embed_dim).init(device),
        }
    }

    /// `x`: `[B, N, D]` → `[B, N, D]`; fc1 and its GELU in one pass where the backend has a fused
    /// linear kernel ([`crate::kernels`]).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = kernels::linear(&self.fc1, x, Activation::Gelu);
        kernels::linear(&self.fc2, hidden, Activation::None)
    }
}
