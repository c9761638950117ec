//! The Newton–Schulz matrix square root of the covariance heads, one image per task, for Flex.
//!
//! Composed from Burn ops, each of the 3T − 3 products is a batched matmul over every image's
//! small `d' × d'` matrix and each `½(3I − M)` three element-wise sweeps, every one a pass over
//! the whole batch. Here one task runs all the iterations of one image while its four
//! `d' × d'` matrices (16 KiB at d' = 32) stay in cache. Inference only: under autodiff the
//! head keeps Burn's composition, whose gradient Burn derives.

use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::math::best_simd;
use super::small_product::{Strided, small_product};

/// `dst = lhs · rhs` for `d × d` row-major matrices, on this thread.
#[inline(always)]
fn product(d: usize, dst: &mut [f32], lhs: &[f32], rhs: &[f32]) {
    small_product((d, d, d), Strided::rows(lhs, d), rhs, d, dst, d, 1.0);
}

/// `m ← ½(3I − m)` for a `d × d` row-major matrix.
#[inline(always)]
fn half_three_eye_minus(d: usize, m: &mut [f32]) {
    // By rows, so the diagonal test is a compare, not a division per element.
    for (i, row) in m.chunks_exact_mut(d).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let eye = if i == j { 3.0 } else { 0.0 };
            *v = (eye - *v) * 0.5;
        }
    }
}

/// Scratch floats [`newton_schulz_one`] needs for a `d × d` matrix.
pub(super) fn scratch_len(d: usize) -> usize {
    4 * d * d
}

/// `y ← √a` for one `d × d` row-major matrix by `iterations` (≥ 1) Newton–Schulz steps, on this
/// thread: the iterations of the reference `dmpo_model::dmpo::newton_schulz_sqrt`. `scratch`
/// holds [`scratch_len`] floats (the caller's, so nothing is allocated per image); the
/// iterates take turns in `y` and a scratch matrix rather than being copied back. Inlined into
/// its callers' vectorised bodies.
#[inline(always)]
pub(super) fn newton_schulz_one(
    d: usize,
    a: &[f32],
    y: &mut [f32],
    iterations: usize,
    scratch: &mut [f32],
) {
    let dd = d * d;
    let (p, rest) = scratch[..scratch_len(d)].split_at_mut(dd);
    let (z, rest) = rest.split_at_mut(dd);
    let (spare_y, next) = rest.split_at_mut(dd);
    p.copy_from_slice(a);
    half_three_eye_minus(d, p);
    product(d, y, a, p);
    z.copy_from_slice(p);
    let (mut z, mut next) = (z, next);
    // `current` holds Yₖ; `other` receives Yₖ₊₁, then they change places.
    let (mut current, mut other) = (y, spare_y);
    for i in 1..iterations {
        product(d, p, z, current);
        half_three_eye_minus(d, p);
        product(d, other, current, p);
        std::mem::swap(&mut current, &mut other);
        if i + 1 < iterations {
            product(d, next, p, z);
            std::mem::swap(&mut z, &mut next);
        }
    }
    // After an odd number of steps the result sits in the scratch matrix and `other` is `y`.
    if (iterations - 1) % 2 == 1 {
        other.copy_from_slice(current);
    }
}

/// [`newton_schulz_one`], vectorised for the CPU it runs on.
fn sqrt_one(d: usize, a: &[f32], y: &mut [f32], iterations: usize, scratch: &mut [f32]) {
    best_simd!((d: usize, a: &[f32], y: &mut [f32], iterations: usize, scratch: &mut [f32]) {
        newton_schulz_one(d, a, y, iterations, scratch)
    })
}

/// The same iterations as the reference `dmpo_model::dmpo::newton_schulz_sqrt`, one image at a
/// time on Flex's buffers: `a: [B, d, d]` → `[B, d, d]`. `None` (declined) for other dtypes or
/// shapes.
pub fn fused_newton_schulz(a: &FlexTensor, iterations: usize) -> Option<FlexTensor> {
    let shape = a.layout().shape();
    if a.dtype() != DType::F32 || shape.num_dims() != 3 || shape[1] != shape[2] || iterations == 0 {
        return None;
    }
    let d = shape[1];
    let a = a.to_contiguous();
    let values = a.as_slice::<f32>()?;
    let mut out = vec![0.0f32; values.len()];
    if d > 0 {
        out.par_chunks_mut(d * d)
            .zip(values.par_chunks(d * d))
            .for_each_init(
                || vec![0.0f32; scratch_len(d)],
                |scratch, (y, a)| sqrt_one(d, a, y, iterations, scratch),
            );
    }
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape.clone()),
        DType::F32,
    ))
}
