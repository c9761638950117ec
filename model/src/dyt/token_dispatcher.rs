use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// One block's token dispatcher: a `Linear(D → 1)` scoring each patch token (prefix tokens are
/// not scored: they are always kept). Initialised as DyT's (normal, std 0.02; zero bias), so
/// its first logits are near 0 and about half the tokens fire.
#[derive(Module, Debug)]
pub struct TokenDispatcher<B: Backend> {
    pub proj: Linear<B>,
    /// Class and register tokens in front of the patches.
    pub num_prefix_tokens: usize,
}

impl<B: Backend> TokenDispatcher<B> {
    pub fn new(dim: usize, num_prefix_tokens: usize, device: &B::Device) -> Self {
        let mut proj = LinearConfig::new(dim, 1)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            })
            .init(device);
        proj.bias = Some(Param::from_tensor(Tensor::zeros([1], device)));
        Self {
            proj,
            num_prefix_tokens,
        }
    }

    /// The patch tokens' logits: tokens `[B, N, D]` → `[B, N − prefix]`.
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, n, d] = x.dims();
        let patches = x.slice([0..b, self.num_prefix_tokens..n, 0..d]);
        self.proj.forward(patches).squeeze_dim::<2>(2)
    }

    /// A per-token keep mask over all `N` tokens, the prefix kept: patch mask `[B, N − prefix]`
    /// → `[B, N]`.
    pub fn with_prefix(&self, patch_mask: Tensor<B, 2>) -> Tensor<B, 2> {
        if self.num_prefix_tokens == 0 {
            return patch_mask;
        }
        let [b, _] = patch_mask.dims();
        let prefix = Tensor::ones([b, self.num_prefix_tokens], &patch_mask.device());
        Tensor::cat(vec![prefix, patch_mask], 1)
    }
}
