//! Multi-head self-attention read straight out of the fused `qkv` projection, for Flex.
//!
//! Composed from Burn ops, splitting `[B, N, 3·D]` into per-head q, k, v `[B, H, N, d]` and
//! merging the heads back costs four copies of the activations per block (Flex's reshape of a
//! strided view and its attention op's `to_contiguous` each copy, element by element through a
//! strided iterator: 14 % of a ViT-S forward in the profile). gemm takes arbitrary strides, so
//! here each head's q·kᵀ reads q and k where the projection wrote them, and its ·v writes the
//! head's columns of the `[B, N, D]` output directly: no copies at all.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::math;

/// A raw output pointer shared by the tasks: each writes only its own head's columns.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: tasks write disjoint elements (one (batch item, head) pair each).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}
impl Output {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY (of callers): offset is inside the output buffer.
        unsafe { self.0.add(offset) }
    }
}

pub fn qkv_attention(qkv: &FlexTensor, heads: usize) -> Option<FlexTensor> {
    let shape = qkv.layout().shape();
    if qkv.dtype() != DType::F32 || shape.num_dims() != 3 || heads == 0 {
        return None;
    }
    let (b, n, d3) = (shape[0], shape[1], shape[2]);
    if d3 % 3 != 0 || (d3 / 3) % heads != 0 || n == 0 {
        return None;
    }
    let d = d3 / 3;
    let hd = d / heads;
    let scale = (hd as f32).powf(-0.5);
    let qkv = qkv.to_contiguous();
    let src = qkv.as_slice::<f32>()?;

    let mut out = vec![0.0f32; b * n * d];
    let dst = Output(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; n * n],
        |scores, task| {
            let (item, head) = (task / heads, task % heads);
            let q = &src[item * n * d3 + head * hd..];
            let k = &src[item * n * d3 + d + head * hd..];
            let v = &src[item * n * d3 + 2 * d + head * hd..];
            // SAFETY: q, k, v are `n × hd` views with row stride 3·D inside `src`; `scores` is
            // `n × n`; the output view (row stride D, this head's hd columns) is inside `out`,
            // and no other task writes it.
            unsafe {
                // scores = scale · q·kᵀ (kᵀ: row i is feature i, column j is token j).
                gemm::gemm(
                    n,
                    n,
                    hd,
                    scores.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr(),
                    1,
                    d3 as isize,
                    k.as_ptr(),
                    d3 as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in scores.chunks_exact_mut(n) {
                math::softmax_in_place(row);
            }
            unsafe {
                gemm::gemm(
                    n,
                    hd,
                    n,
                    dst.at(item * n * d + head * hd),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    n as isize,
                    v.as_ptr(),
                    1,
                    d3 as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(vec![b, n, d])),
        DType::F32,
    ))
}
