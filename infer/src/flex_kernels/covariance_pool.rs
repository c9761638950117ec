//! A covariance head's whole pooling as one kernel per image, for inference on Flex.
//!
//! Composed from Burn ops, the head is about a dozen passes over the batch (LayerNorm, the
//! reduction, the mean, the centring, the covariance product, the trace, two scalings, the
//! Newton–Schulz iterations, the triangle's gather), each allocating its output; at the demo's
//! size (49 tokens × 96 → 32) that overhead, not the arithmetic, made an exit cost twice what
//! its MACs say. Here one task takes one image from its tokens to its upper triangle with every
//! intermediate in cache. The reduction's bias is not added: the centring over tokens removes
//! it exactly. Under autodiff the head keeps Burn's composition, whose gradient Burn derives.

use burn::backend::Flex;
use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::CovariancePool;
use rayon::prelude::*;

use super::math::{LayerNormParams, best_simd, layer_norm_rows};
use super::newton_schulz::{self, newton_schulz_one};
use super::optional_slice;
use super::small_product::{Strided, small_product};

/// `[B, T, D]` tokens → `[B, d'(d'+1)/2]` features; `None` (declined) for other dtypes or
/// shapes.
pub fn covariance_pool(input: &CovariancePool<Flex>) -> Option<FlexTensor> {
    let f32s = |t: &FlexTensor| t.dtype() == DType::F32;
    let CovariancePool {
        tokens,
        prefix,
        norm_gamma,
        norm_beta,
        norm_eps,
        reduce_weight,
        iterations,
        eps,
    } = input;
    if !f32s(tokens)
        || !f32s(norm_gamma)
        || !f32s(reduce_weight)
        || !norm_beta.as_ref().is_none_or(f32s)
    {
        return None;
    }
    let shape = tokens.layout().shape();
    let w_shape = reduce_weight.layout().shape();
    if shape.num_dims() != 3 || w_shape.num_dims() != 2 || *iterations == 0 {
        return None;
    }
    let (b, t, dim) = (shape[0], shape[1], shape[2]);
    let r = w_shape[1];
    if t <= *prefix || dim == 0 || r == 0 || w_shape[0] != dim {
        return None;
    }
    let tokens = tokens.to_contiguous();
    let weight = reduce_weight.to_contiguous();
    let gamma = norm_gamma.to_contiguous();
    let beta = norm_beta.as_ref().map(|b| b.to_contiguous());
    let (tokens, w, gamma) = (
        tokens.as_slice::<f32>()?,
        weight.as_slice::<f32>()?,
        gamma.as_slice::<f32>()?,
    );
    let beta = optional_slice(&beta)?;
    if gamma.len() != dim || beta.is_some_and(|b| b.len() != dim) {
        return None;
    }
    let (norm_eps, eps) = (*norm_eps as f32, *eps as f32);
    let tri = r * (r + 1) / 2;
    let mut out = vec![0.0f32; b * tri];
    let head = Head {
        prefix: *prefix,
        dim,
        r,
        norm: LayerNormParams {
            gamma,
            beta,
            eps: norm_eps,
        },
        w,
        iterations: *iterations,
        eps,
    };
    out.par_chunks_mut(tri)
        .zip(tokens.par_chunks(t * dim))
        .for_each_init(Vec::new, |scratch, (features, image)| {
            pool_one(&head, image, features, scratch)
        });
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(burn::tensor::Shape::from([b, tri])),
        DType::F32,
    ))
}

/// One head's parameters, borrowed from the tensors for the length of the call.
struct Head<'a> {
    prefix: usize,
    dim: usize,
    /// d', the reduced width.
    r: usize,
    norm: LayerNormParams<'a>,
    /// `[dim, r]`, row-major.
    w: &'a [f32],
    iterations: usize,
    eps: f32,
}

/// One image's tokens `[T, dim]` → its `d'(d'+1)/2` features, vectorised for the CPU it runs on.
/// `scratch` is the task's own buffer, grown to [`Head::scratch_len`] on first use, so no image
/// allocates (a tenth of a head's time went to `malloc`, `free` and the copies of fresh buffers).
fn pool_one(head: &Head<'_>, image: &[f32], features: &mut [f32], scratch: &mut Vec<f32>) {
    scratch.resize(head.scratch_len(image.len()), 0.0);
    let scratch = scratch.as_mut_slice();
    best_simd!((head: &Head<'_>, image: &[f32], features: &mut [f32], scratch: &mut [f32]) {
        pool_one_body(head, image, features, scratch)
    })
}

impl Head<'_> {
    /// Scratch floats [`pool_one`] needs for an image of `values` floats: the normed tokens,
    /// their reduction, its mean, Σ, its root and the Newton–Schulz iterates.
    fn scratch_len(&self, values: usize) -> usize {
        let n = values / self.dim - self.prefix;
        let r = self.r;
        n * self.dim + n * r + r + 2 * r * r + newton_schulz::scratch_len(r)
    }
}

#[inline(always)]
fn pool_one_body(head: &Head<'_>, image: &[f32], features: &mut [f32], scratch: &mut [f32]) {
    let Head {
        prefix,
        dim,
        r,
        norm,
        w,
        iterations,
        eps,
    } = *head;
    let patches = &image[prefix * dim..];
    let n = patches.len() / dim;
    let (normed, rest) = scratch.split_at_mut(n * dim);
    let (x, rest) = rest.split_at_mut(n * r);
    let (mean, rest) = rest.split_at_mut(r);
    let (sigma, rest) = rest.split_at_mut(r * r);
    let (y, ns_scratch) = rest.split_at_mut(r * r);
    // LayerNorm of each patch token, as Burn's: (x − mean) / √(var + ε) · γ + β.
    layer_norm_rows(patches, normed, dim, norm);
    // The reduction to d', then centred over the tokens.
    small_product((n, r, dim), Strided::rows(normed, dim), w, r, x, r, 1.0);
    mean.fill(0.0);
    for row in x.chunks_exact(r) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    for m in mean.iter_mut() {
        *m /= n as f32;
    }
    for row in x.chunks_exact_mut(r) {
        for (v, m) in row.iter_mut().zip(&*mean) {
            *v -= m;
        }
    }
    // Σ = X̄ᵀX̄ / N, trace-normalised.
    small_product(
        (r, r, n),
        Strided::transposed(x, r),
        x,
        r,
        sigma,
        r,
        1.0 / n as f32,
    );
    let trace = (0..r).map(|i| sigma[i * r + i]).sum::<f32>() + eps;
    for v in sigma.iter_mut() {
        *v /= trace;
    }
    newton_schulz_one(r, sigma, y, iterations, ns_scratch);
    let scale = trace.sqrt();
    let mut k = 0;
    for i in 0..r {
        for j in i..r {
            features[k] = y[i * r + j] * scale;
            k += 1;
        }
    }
}
