use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::kernels::{self, Activation};

/// The light module between the trunk and an early exit: `z = h + s · Up(GELU(Down(LN(h))))`.
///
/// The exit reads `z`; the trunk keeps passing `h` to the next block. So the exit's need for
/// discriminative features is met by the bypass, and does not bend the low-level features the
/// deeper blocks consume. `Up` starts at zero: at first the exit sees `h` itself.
#[derive(Module, Debug)]
pub struct Bypass<B: Backend> {
    pub norm: LayerNorm<B>,
    pub down: Linear<B>,
    pub up: Linear<B>,
    pub scale: f64,
}

impl<B: Backend> Bypass<B> {
    /// The LayerNorm's ε (a config value, not a parameter: a loaded module has it from `new`).
    pub const NORM_EPS: f64 = 1e-6;

    pub fn new(dim: usize, bottleneck: usize, scale: f64, device: &B::Device) -> Self {
        Self {
            norm: LayerNormConfig::new(dim)
                .with_epsilon(Self::NORM_EPS)
                .init(device),
            down: LinearConfig::new(dim, bottleneck).init(device),
            up: LinearConfig::new(bottleneck, dim)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init(device),
            scale,
        }
    }

    /// `h`: the trunk's tokens after the exit's block, `[B, T, D]` → `z`, `[B, T, D]`.
    /// MACs per image on `tokens` tokens of width D: down to its width and back up.
    pub fn macs(&self, tokens: u64) -> u64 {
        let [d, r] = self.down.weight.dims();
        2 * tokens * (d * r) as u64
    }

    /// `h`'s bypass output, fused where the backend has a kernel for it ([`kernels::bypass`]).
    pub fn forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        kernels::bypass(self, h)
    }

    /// [`Self::forward`] from Burn ops (and the fused linear layers): the reference, and what
    /// runs under autodiff.
    pub fn composed_forward(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = kernels::linear(
            &self.down,
            kernels::layer_norm(&self.norm, Self::NORM_EPS, h.clone()),
            Activation::Gelu,
        );
        h + super::scaled(
            kernels::linear(&self.up, hidden, Activation::None),
            self.scale,
        )
    }
}
