//! LayerNorm with its own backward, for training on `Autodiff<Flex>`.
//!
//! Burn's autodiff composes LayerNorm from about ten ops (two means, the centring, a square, a
//! square root, a division, the scale and the shift) and derives about twenty for the backward,
//! each a pass over the tokens that Flex runs on one thread; in the demo model's training step
//! they were a fifth of the time, most of it while the other threads waited
//! (docs/benchmarks.md). Here the forward is one pass per block of rows that also keeps each
//! row's mean and `1/σ`, and the backward one pass per block:
//!
//! ```text
//! x̂ = (x − μ)/σ,   g = dy ⊙ γ,   dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ,
//! dγ = Σ_rows dy ⊙ x̂,   dβ = Σ_rows dy
//! ```
//!
//! The rows are split into blocks of a fixed size and the blocks' partial sums of dγ and dβ
//! added in block order, so the result is the same bits on any thread count.

use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::math::{LayerNormParams, best_simd, lane_sum, layer_norm_in_place};

/// Rows per task; also the blocks whose partial sums of dγ and dβ are added in order.
const ROWS_PER_TASK: usize = 64;

/// Each row's mean and `1 / √(var + ε)`, kept from the forward for the backward.
#[derive(Debug)]
pub struct RowStats {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

/// LayerNorm over the last dimension of `x` and each row's statistics; `None` for anything but
/// f32 tensors whose parameters have the last dimension's length.
pub fn forward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    eps: f64,
) -> Option<(FlexTensor, RowStats)> {
    let f32s = |t: &FlexTensor| t.dtype() == DType::F32;
    if !f32s(x) || !f32s(gamma) || !beta.is_none_or(f32s) {
        return None;
    }
    let shape = x.layout().shape().clone();
    let dim = *shape.last()?;
    let vector = |t: &FlexTensor| {
        let t = t.to_contiguous();
        (t.layout().shape().num_elements() == dim).then_some(t)
    };
    let gamma = vector(gamma)?;
    let beta = match beta {
        Some(b) => Some(vector(b)?),
        None => None,
    };
    if dim == 0 {
        return None;
    }
    let norm = LayerNormParams {
        gamma: gamma.as_slice::<f32>()?,
        beta: match &beta {
            Some(b) => Some(b.as_slice::<f32>()?),
            None => None,
        },
        eps: eps as f32,
    };
    let x = x.to_contiguous();
    let mut out = x.as_slice::<f32>()?.to_vec();
    let rows = out.len() / dim;
    let mut stats = RowStats {
        mean: vec![0.0; rows],
        inv_std: vec![0.0; rows],
    };
    out.par_chunks_mut(ROWS_PER_TASK * dim)
        .zip(stats.mean.par_chunks_mut(ROWS_PER_TASK))
        .zip(stats.inv_std.par_chunks_mut(ROWS_PER_TASK))
        .for_each(|((rows, mean), inv_std)| normalise_rows(rows, mean, inv_std, norm));
    let out = FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape),
        DType::F32,
    );
    Some((out, stats))
}

fn normalise_rows(
    rows: &mut [f32],
    mean: &mut [f32],
    inv_std: &mut [f32],
    norm: LayerNormParams<'_>,
) {
    best_simd!((rows: &mut [f32], mean: &mut [f32], inv_std: &mut [f32], norm: LayerNormParams<'_>) {
        let dim = norm.gamma.len();
        for ((row, mean), inv_std) in rows.chunks_exact_mut(dim).zip(mean).zip(inv_std) {
            (*mean, *inv_std) = layer_norm_in_place(row, norm);
        }
    })
}

/// The gradients [`backward`] computes: `dx` always, `dγ` and `dβ` when asked for.
pub struct Gradients {
    pub x: Vec<f32>,
    pub gamma: Option<Vec<f32>>,
    pub beta: Option<Vec<f32>>,
}

/// The gradients of LayerNorm for the output gradient `dy` (both `x` and `dy` contiguous,
/// `[rows, dim]`), from the forward's `stats`.
pub fn backward(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &RowStats,
    want_gamma: bool,
    want_beta: bool,
) -> Gradients {
    let dim = gamma.len();
    let mut dx = vec![0.0f32; x.len()];
    let block = ROWS_PER_TASK * dim;
    let partials: Vec<Partial> = dx
        .par_chunks_mut(block)
        .enumerate()
        .map(|(i, dx)| {
            let rows = i * ROWS_PER_TASK..i * ROWS_PER_TASK + dx.len() / dim;
            let mut partial = Partial {
                gamma: want_gamma.then(|| vec![0.0; dim]),
                beta: want_beta.then(|| vec![0.0; dim]),
            };
            let input = BlockInput {
                x: &x[i * block..][..dx.len()],
                dy: &dy[i * block..][..dx.len()],
                gamma,
                mean: &stats.mean[rows.clone()],
                inv_std: &stats.inv_std[rows],
            };
            backward_rows(&input, dx, &mut partial);
            partial
        })
        .collect();
    // The blocks' partial sums in block order: the same bits on any thread count.
    let total = |pick: fn(&Partial) -> Option<&Vec<f32>>| {
        let mut sum = vec![0.0f32; dim];
        for partial in &partials {
            for (s, p) in sum.iter_mut().zip(pick(partial)?) {
                *s += p;
            }
        }
        Some(sum)
    };
    Gradients {
        x: dx,
        gamma: total(|p| p.gamma.as_ref()),
        beta: total(|p| p.beta.as_ref()),
    }
}

/// One block's sums of dγ and dβ over its rows.
struct Partial {
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
}

/// One block of rows: the input, the output gradient, γ and the rows' statistics.
struct BlockInput<'a> {
    x: &'a [f32],
    dy: &'a [f32],
    gamma: &'a [f32],
    mean: &'a [f32],
    inv_std: &'a [f32],
}

fn backward_rows(input: &BlockInput<'_>, dx: &mut [f32], partial: &mut Partial) {
    best_simd!((input: &BlockInput<'_>, dx: &mut [f32], partial: &mut Partial) {
        let dim = input.gamma.len();
        let mut normed = vec![0.0f32; dim];
        let mut scaled = vec![0.0f32; dim];
        let rows = input
            .x
            .chunks_exact(dim)
            .zip(input.dy.chunks_exact(dim))
            .zip(dx.chunks_exact_mut(dim))
            .zip(input.mean.iter().zip(input.inv_std));
        for (((x, dy), dx), (&mean, &inv_std)) in rows {
            for (n, &v) in normed.iter_mut().zip(x) {
                *n = (v - mean) * inv_std;
            }
            for ((s, &d), &g) in scaled.iter_mut().zip(dy).zip(input.gamma) {
                *s = d * g;
            }
            let mean_scaled = lane_sum(&scaled) / dim as f32;
            let mean_scaled_normed = lane_dot(&scaled, &normed) / dim as f32;
            for ((d, &s), &n) in dx.iter_mut().zip(&scaled).zip(&normed) {
                *d = (s - mean_scaled - n * mean_scaled_normed) * inv_std;
            }
            if let Some(sum) = &mut partial.gamma {
                for ((s, &d), &n) in sum.iter_mut().zip(dy).zip(&normed) {
                    *s += d * n;
                }
            }
            if let Some(sum) = &mut partial.beta {
                for (s, &d) in sum.iter_mut().zip(dy) {
                    *s += d;
                }
            }
        }
    })
}

/// Σ aᵢ·bᵢ in eight interleaved partial sums, as [`lane_sum`].
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sum = [0.0f32; 8];
    let mut chunks = a.chunks_exact(8).zip(b.chunks_exact(8));
    for (a, b) in &mut chunks {
        for i in 0..8 {
            sum[i] += a[i] * b[i];
        }
    }
    let tail = a.len() / 8 * 8;
    let rest: f32 = a[tail..].iter().zip(&b[tail..]).map(|(a, b)| a * b).sum();
    sum.iter().sum::<f32>() + rest
}
