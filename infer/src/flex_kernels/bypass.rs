//! A bypass module whole, `z = h + s · Up(GELU(Down(LN(h))))`, for inference on Flex.
//!
//! Composed, it is five passes over the batch's tokens (the LayerNorm, two linear layers, the
//! scaling and the residual add), each writing a fresh `[B, T, D]` or `[B, T, r]` tensor; at the
//! demo's size that cost 0.5 ms at batch 64, a sixth of an exit's time for 1.3 % of a block's
//! MACs. Every step works row by row (token by token), so here a task takes a block of rows
//! through all of them while they are in cache. Results depend on the rows alone, never on
//! how they are split over threads.

use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::BypassInput;
use rayon::prelude::*;

use super::math::{LayerNormParams, best_simd, gelu, layer_normed};
use super::optional_slice;
use super::small_product::{Strided, small_product};

/// Tokens per task: enough to amortise a task, few enough that a batch-1 ViT-S image
/// (197 tokens) still spreads over the cores.
const ROWS_PER_TASK: usize = 32;

/// `[B, T, D]` → `[B, T, D]`; `None` (declined) for other dtypes or shapes.
pub fn bypass(input: &BypassInput<burn::backend::Flex>) -> Option<FlexTensor> {
    let f32s = |t: &FlexTensor| t.dtype() == DType::F32;
    let optional = |t: &Option<FlexTensor>| t.as_ref().is_none_or(f32s);
    let BypassInput {
        tokens,
        norm_gamma,
        norm_beta,
        norm_eps,
        down_weight,
        down_bias,
        up_weight,
        up_bias,
        scale,
    } = input;
    if ![tokens, norm_gamma, down_weight, up_weight]
        .into_iter()
        .all(f32s)
        || !optional(norm_beta)
        || !optional(down_bias)
        || !optional(up_bias)
    {
        return None;
    }
    let shape = tokens.layout().shape();
    let (down_shape, up_shape) = (down_weight.layout().shape(), up_weight.layout().shape());
    if shape.num_dims() != 3 || down_shape.num_dims() != 2 || up_shape.num_dims() != 2 {
        return None;
    }
    let dim = shape[2];
    let r = down_shape[1];
    if dim == 0 || r == 0 || down_shape[0] != dim || up_shape[0] != r || up_shape[1] != dim {
        return None;
    }
    let contiguous = |t: &FlexTensor| t.to_contiguous();
    let maybe = |t: &Option<FlexTensor>| t.as_ref().map(contiguous);
    let (tokens, gamma, down, up) = (
        contiguous(tokens),
        contiguous(norm_gamma),
        contiguous(down_weight),
        contiguous(up_weight),
    );
    let (beta, down_bias, up_bias) = (maybe(norm_beta), maybe(down_bias), maybe(up_bias));
    let branch = Branch {
        dim,
        r,
        norm: LayerNormParams {
            gamma: gamma.as_slice::<f32>()?,
            beta: optional_slice(&beta)?,
            eps: *norm_eps as f32,
        },
        down: down.as_slice::<f32>()?,
        down_bias: optional_slice(&down_bias)?,
        up: up.as_slice::<f32>()?,
        up_bias: optional_slice(&up_bias)?,
        scale: *scale as f32,
    };
    let lengths_fit = branch.norm.gamma.len() == dim
        && branch.norm.beta.is_none_or(|b| b.len() == dim)
        && branch.down_bias.is_none_or(|b| b.len() == r)
        && branch.up_bias.is_none_or(|b| b.len() == dim);
    if !lengths_fit {
        return None;
    }
    let h = tokens.as_slice::<f32>()?;
    let mut out = h.to_vec();
    out.par_chunks_mut(ROWS_PER_TASK * dim)
        .for_each(|rows| rows_through(&branch, rows));
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape.clone()),
        DType::F32,
    ))
}

/// The module's parameters, borrowed for the call.
struct Branch<'a> {
    dim: usize,
    /// The bottleneck's width.
    r: usize,
    norm: LayerNormParams<'a>,
    /// `[dim, r]`, row-major.
    down: &'a [f32],
    down_bias: Option<&'a [f32]>,
    /// `[r, dim]`, row-major.
    up: &'a [f32],
    up_bias: Option<&'a [f32]>,
    scale: f32,
}

/// `rows` holds some tokens' `h` (`[n, dim]`) and leaves with their `z`; vectorised for the
/// CPU it runs on.
fn rows_through(branch: &Branch<'_>, rows: &mut [f32]) {
    best_simd!((branch: &Branch<'_>, rows: &mut [f32]) { rows_through_body(branch, rows) })
}

#[inline(always)]
fn rows_through_body(branch: &Branch<'_>, rows: &mut [f32]) {
    let Branch {
        dim,
        r,
        norm,
        down,
        down_bias,
        up,
        up_bias,
        scale,
    } = *branch;
    let n = rows.len() / dim;
    let mut normed = layer_normed(rows, dim, norm);
    let mut hidden = vec![0.0f32; n * r];
    small_product(
        (n, r, dim),
        Strided::rows(&normed, dim),
        down,
        r,
        &mut hidden,
        r,
        1.0,
    );
    for row in hidden.chunks_exact_mut(r) {
        if let Some(bias) = down_bias {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
        for v in row.iter_mut() {
            *v = gelu(*v);
        }
    }
    // `normed` is free again: it takes Up's output.
    small_product(
        (n, dim, r),
        Strided::rows(&hidden, r),
        up,
        dim,
        &mut normed,
        dim,
        1.0,
    );
    for (z, u) in rows.chunks_exact_mut(dim).zip(normed.chunks_exact(dim)) {
        match up_bias {
            Some(bias) => {
                for ((z, &u), b) in z.iter_mut().zip(u).zip(bias) {
                    *z += scaled(u + b, scale);
                }
            }
            None => {
                for (z, &u) in z.iter_mut().zip(u) {
                    *z += scaled(u, scale);
                }
            }
        }
    }
}

/// `u · s`, skipped when `s` is 1 as the composition skips it (`dmpo::scaled`).
#[inline(always)]
fn scaled(u: f32, s: f32) -> f32 {
    if s == 1.0 { u } else { u * s }
}
