use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::kernels::{self, Activation};

/// AdaptFormer's parallel bottleneck adapter on a block's MLP:
/// `x + MLP(LN(x)) + s · Up(ReLU(Down(LN(x))))`, sharing the MLP's `LN(x)`.
///
/// `Up` starts at zero, so a fresh adapter leaves the pretrained block exactly as it was.
#[derive(Module, Debug)]
pub struct Adapter<B: Backend> {
    pub down: Linear<B>,
    pub up: Linear<B>,
    pub scale: f64,
}

impl<B: Backend> Adapter<B> {
    pub fn new(dim: usize, bottleneck: usize, scale: f64, device: &B::Device) -> Self {
        Self {
            down: LinearConfig::new(dim, bottleneck).init(device),
            up: LinearConfig::new(bottleneck, dim)
                .with_initializer(burn::nn::Initializer::Zeros)
                .init(device),
            scale,
        }
    }

    /// `normed`: the block's `norm2(x)`, `[B, N, D]` → the branch to add, `[B, N, D]`.
    /// MACs per image on `tokens` tokens of width D: down to r and back up.
    pub fn macs(&self, tokens: u64) -> u64 {
        let [d, r] = self.down.weight.dims();
        2 * tokens * (d * r) as u64
    }

    pub fn forward(&self, normed: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = kernels::linear(&self.down, normed, Activation::Relu);
        super::scaled(
            kernels::linear(&self.up, hidden, Activation::None),
            self.scale,
        )
    }
}
