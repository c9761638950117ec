use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::kernels;
use crate::vit::{GlobalPool, pool_tokens};

/// A first-order predictor: optional norm on the tokens, pooling (class token or mean of
/// patches), optional norm on the pooled vector, linear classifier. The final exit is the
/// backbone's own norm + pool + `fc_norm` + head in this form; the plain multi-exit baseline
/// (MET-style) uses it at every exit.
#[derive(Module, Debug)]
pub struct LinearHead<B: Backend> {
    pub norm: Option<LayerNorm<B>>,
    pub fc_norm: Option<LayerNorm<B>>,
    pub classifier: Linear<B>,
    pub pool: GlobalPool,
    pub num_prefix_tokens: usize,
    /// The norms' epsilon, for [`kernels::layer_norm`] (the backbone's for the last exit).
    pub norm_eps: f64,
}

impl<B: Backend> LinearHead<B> {
    /// A fresh head's LayerNorm epsilon (timm's ViTs').
    pub const NORM_EPS: f64 = 1e-6;

    /// A fresh early-exit head: LayerNorm on the tokens, pooling, linear classifier.
    pub fn new(
        dim: usize,
        num_classes: usize,
        pool: GlobalPool,
        num_prefix_tokens: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            norm: Some(
                LayerNormConfig::new(dim)
                    .with_epsilon(Self::NORM_EPS)
                    .init(device),
            ),
            fc_norm: None,
            classifier: LinearConfig::new(dim, num_classes).init(device),
            pool,
            num_prefix_tokens,
            norm_eps: Self::NORM_EPS,
        }
    }

    /// The pooled, normed features fed to the classifier: `[B, T, D]` → `[B, D]`.
    pub fn pre_logits(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let tokens = match &self.norm {
            Some(norm) => kernels::layer_norm(norm, self.norm_eps, tokens),
            None => tokens,
        };
        let pooled = pool_tokens(tokens, self.pool, self.num_prefix_tokens);
        match &self.fc_norm {
            Some(norm) => kernels::layer_norm(norm, self.norm_eps, pooled),
            None => pooled,
        }
    }

    /// `[B, T, D]` → logits `[B, classes]`.
    /// MACs per image: the classifier on the pooled token.
    pub fn macs(&self) -> u64 {
        let [i, o] = self.classifier.weight.dims();
        (i * o) as u64
    }

    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        self.classifier.forward(self.pre_logits(tokens))
    }
}
