use burn::prelude::*;

use crate::kernels::{self, Activation};

/// Settings of a [`PatchEmbed`].
#[derive(Debug, Clone)]
pub struct PatchEmbedConfig {
    pub in_chans: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
}

impl PatchEmbedConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchEmbed<B> {
        let fan_in = self.in_chans * self.patch_size * self.patch_size;
        PatchEmbed {
            proj: burn::nn::LinearConfig::new(fan_in, self.embed_dim).init(device),
            patch_size: self.patch_size,
        }
    }
}

/// Cuts the image into non-overlapping P×P patches and projects each to the embedding width.
///
/// timm does this with a stride-P convolution; a convolution whose stride equals its kernel is
/// exactly a matrix product over flattened patches, which every backend runs fast. The weight is
/// timm's `[D, C, P, P]` kernel flattened in `(c, ky, kx)` order and transposed: `[C·P·P, D]`.
#[derive(Module, Debug)]
pub struct PatchEmbed<B: Backend> {
    pub proj: burn::nn::Linear<B>,
    pub patch_size: usize,
}

impl<B: Backend> PatchEmbed<B> {
    /// `images`: `[B, C, H, W]` with H and W multiples of P → `[B, (H/P)·(W/P), D]`,
    /// patches in row-major order, as timm flattens them.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        let patches = kernels::patchify(images, self.patch_size);
        kernels::linear(&self.proj, patches, Activation::None)
    }
}
