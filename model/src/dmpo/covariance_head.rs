use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use crate::kernels::{self, Activation};

/// A second-order (covariance) predictor with iSQRT-COV matrix normalisation
/// (Li et al., CVPR 2018), for the early exits, where a linear head on a shallow class token
/// has little to discriminate with:
///
/// 1. `X = Reduce(LN(patch tokens))`, `[N, d']`;
/// 2. `Σ = (1/N) X̄ᵀX̄`, X̄ centred over tokens;
/// 3. `A = Σ / (tr Σ + ε)`; 4. `Y = NS_T(A)` (Newton–Schulz, T iterations);
/// 5. `Y · √(tr Σ + ε)`; 6. upper triangle → `Linear` → logits.
///
/// With `cls` set, a linear head on the class token is added to the logits (So-ViT's fusion).
#[derive(Module, Debug)]
pub struct CovarianceHead<B: Backend> {
    pub norm: LayerNorm<B>,
    pub reduce: Linear<B>,
    pub classifier: Linear<B>,
    pub cls: Option<Linear<B>>,
    pub iterations: usize,
    pub num_prefix_tokens: usize,
    pub eps: f64,
}

impl<B: Backend> CovarianceHead<B> {
    /// The epsilon of the head's LayerNorm (timm's, as the backbone's), which a fused kernel
    /// needs and Burn's `LayerNorm` does not expose.
    pub const NORM_EPS: f64 = 1e-6;

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        reduced: usize,
        num_classes: usize,
        iterations: usize,
        num_prefix_tokens: usize,
        fuse_cls: bool,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            norm: LayerNormConfig::new(dim)
                .with_epsilon(Self::NORM_EPS)
                .init(device),
            reduce: LinearConfig::new(dim, reduced).init(device),
            classifier: LinearConfig::new(reduced * (reduced + 1) / 2, num_classes).init(device),
            cls: (fuse_cls && num_prefix_tokens > 0)
                .then(|| LinearConfig::new(dim, num_classes).init(device)),
            iterations,
            num_prefix_tokens,
            eps,
        }
    }

    /// The matrix-normalised covariance of the patch tokens: `[B, T, D]` → `[B, d', d']`.
    ///
    /// Per-image scalars (the trace) are applied on `[B, d'·d']` views: a row broadcast, which
    /// Flex vectorises, where a `[B, 1, 1]` one walks the tensor element by element. (Plain
    /// broadcasts on other backends; the values are the same.)
    pub fn pooled_covariance(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, _] = tokens.dims();
        let p = self.num_prefix_tokens;
        let n = t - p;
        let x = kernels::linear(
            &self.reduce,
            kernels::layer_norm(&self.norm, Self::NORM_EPS, tokens.narrow(1, p, n)),
            Activation::None,
        );
        // The mean repeated over the tokens, then a same-shape subtraction: Flex walks a
        // broadcast over the middle dimension element by element (docs/benchmarks.md).
        let centred = x.clone() - x.mean_dim(1).repeat_dim(1, n);
        let sigma = centred.clone().swap_dims(1, 2).matmul(centred) / n as f64;
        let d = sigma.dims()[1];
        let sigma = sigma.reshape([b, d * d]);
        let trace = batch_trace(sigma.clone(), d) + self.eps;
        let a = (sigma / trace.clone()).reshape([b, d, d]);
        let y = kernels::matrix_sqrt(a, self.iterations).reshape([b, d * d]);
        (y * trace.sqrt()).reshape([b, d, d])
    }

    /// `tokens`: `[B, T, D]` (class token first when there is one) → logits `[B, classes]`.
    /// MACs per image on `tokens` tokens (prefix tokens included): the reduction of the patch
    /// tokens to d', their covariance, 3 products per Newton–Schulz iteration, the classifier
    /// on the upper triangle, and the class-token head when fused.
    pub fn macs(&self, tokens: u64) -> u64 {
        let d = self.reduce.weight.dims()[0] as u64;
        let r = self.reduce.weight.dims()[1] as u64;
        let n = tokens - self.num_prefix_tokens as u64;
        let [tri, classes] = self.classifier.weight.dims();
        let cls = self.cls.as_ref().map_or(0, |c| {
            let [i, o] = c.weight.dims();
            (i * o) as u64
        });
        n * d * r
            + n * r * r
            + 3 * self.iterations as u64 * r * r * r
            + (tri * classes) as u64
            + cls
    }

    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, d] = tokens.dims();
        let cls = self.cls.as_ref().map(|head| {
            head.forward(
                self.norm
                    .forward(tokens.clone().narrow(1, 0, 1))
                    .reshape([b, d]),
            )
        });
        let features = kernels::covariance_features(self, tokens);
        let logits = kernels::linear(&self.classifier, features, Activation::None);
        match cls {
            Some(c) => logits + c,
            None => logits,
        }
    }
}

/// Trace of each `[d, d]` matrix, flattened: `[B, d·d]` → `[B, 1]`.
fn batch_trace<B: Backend>(m: Tensor<B, 2>, d: usize) -> Tensor<B, 2> {
    let diagonal: Vec<i64> = (0..d).map(|i| (i * d + i) as i64).collect();
    let diagonal = Tensor::<B, 1, Int>::from_data(TensorData::new(diagonal, [d]), &m.device());
    m.select(1, diagonal).sum_dim(1)
}
