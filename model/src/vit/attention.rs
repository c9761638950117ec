use burn::prelude::*;
use burn::tensor::module::attention;

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
    /// Uses Burn's `attention` op (softmax(q·kᵀ/√d)·v), which backends may fuse.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let qkv = self.qkv.forward(x).reshape([b, n, 3, h, hd]);
        let head = |i: usize| {
            qkv.clone()
                .narrow(2, i, 1)
                .reshape([b, n, h, hd])
                .swap_dims(1, 2)
        };
        let out = attention(head(0), head(1), head(2), None, None, Default::default());
        self.proj.forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}
