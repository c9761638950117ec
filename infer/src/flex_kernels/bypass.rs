//! A bypass module whole, `z = h + s · Up(GELU(Down(LN(h))))`, for inference on Flex.
//!
//! Composed, it is five passes over the batch's tokens (the LayerNorm, two linear layers, the
//! scaling and the residual add), each writing a fresh `[B, T, D]` or `[B, T, r]` tensor; at the
//! demo's size that cost 0.5 ms at batch 64, a sixth of an exit's time for 1.3 % of a block's
//! MACs. Every step works row by row (token by token), so here a task takes a block of rows
//! through all of them while they are in cache. Results depend on the rows alone, never on
//! how they are split over threads.

use std::mem::MaybeUninit;

use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::BypassInput;
use rayon::prelude::*;

use super::math::{LayerNormParams, best_simd, gelu, layer_norm_rows};
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
    // Each task writes its rows' `z` from their `h`: no serial copy of the batch first (it was
    // a twentieth of a head's time with the other core idle).
    let mut out: Vec<f32> = Vec::with_capacity(h.len());
    out.spare_capacity_mut()
        .par_chunks_mut(ROWS_PER_TASK * dim)
        .zip(h.par_chunks(ROWS_PER_TASK * dim))
        .for_each_init(Vec::new, |scratch, (z, h)| {
            rows_through(&branch, h, z, scratch)
        });
    // SAFETY: the chunks cover the whole capacity (`h.len()` floats) and `rows_through`
    // writes every element of its chunk.
    unsafe { out.set_len(h.len()) };
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

/// Some tokens' `z` (`[n, dim]`, every element written) from their `h`; vectorised for the
/// CPU it runs on. `scratch` is the task's own, grown on first use (nothing allocated per
/// block of rows).
fn rows_through(
    branch: &Branch<'_>,
    rows: &[f32],
    z: &mut [MaybeUninit<f32>],
    scratch: &mut Vec<f32>,
) {
    let n = rows.len() / branch.dim;
    scratch.resize(n * (branch.dim + branch.r), 0.0);
    let scratch = scratch.as_mut_slice();
    best_simd!((branch: &Branch<'_>, rows: &[f32], z: &mut [MaybeUninit<f32>], scratch: &mut [f32]) {
        rows_through_body(branch, rows, z, scratch)
    })
}

#[inline(always)]
fn rows_through_body(
    branch: &Branch<'_>,
    rows: &[f32],
    z: &mut [MaybeUninit<f32>],
    scratch: &mut [f32],
) {
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
    let (normed, hidden) = scratch[..n * (dim + r)].split_at_mut(n * dim);
    layer_norm_rows(rows, normed, dim, norm);
    small_product(
        (n, r, dim),
        Strided::rows(normed, dim),
        down,
        r,
        hidden,
        r,
        1.0,
    );
    if let Some(bias) = down_bias {
        for row in hidden.chunks_exact_mut(r) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
    // Over the whole block, not row by row: a bottleneck row (8 wide) is half a vector.
    for v in hidden.iter_mut() {
        *v = gelu(*v);
    }
    // `normed` is free again: it takes Up's output.
    small_product(
        (n, dim, r),
        Strided::rows(hidden, r),
        up,
        dim,
        normed,
        dim,
        1.0,
    );
    assert_eq!(z.len(), rows.len(), "one z per h");
    for ((z, h), u) in z
        .chunks_exact_mut(dim)
        .zip(rows.chunks_exact(dim))
        .zip(normed.chunks_exact(dim))
    {
        match up_bias {
            Some(bias) => {
                for (((z, &h), &u), b) in z.iter_mut().zip(h).zip(u).zip(bias) {
                    z.write(h + scaled(u + b, scale));
                }
            }
            None => {
                for ((z, &h), &u) in z.iter_mut().zip(h).zip(u) {
                    z.write(h + scaled(u, scale));
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
