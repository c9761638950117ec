//! Multi-head self-attention read straight out of the fused `qkv` projection, for Flex.
//!
//! Composed from Burn ops, splitting `[B, N, 3·D]` into per-head q, k, v `[B, H, N, d]` and
//! merging the heads back costs four copies of the activations per block (Flex's reshape of a
//! strided view and its attention op's `to_contiguous` each copy, element by element through a
//! strided iterator; the profile is in docs/benchmarks.md). gemm takes arbitrary strides, so
//! here each head's q·kᵀ reads q and k where the projection wrote them, and its ·v writes the
//! head's columns of the `[B, N, D]` output directly: no copies at all.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use super::math;
use super::product::{Operand, product};

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

/// The shape of a `[B, N, 3·D]` qkv tensor split into `heads`: `(B, N, D, head_dim)`.
pub(super) fn dims(qkv: &FlexTensor, heads: usize) -> Option<(usize, usize, usize, usize)> {
    let shape = qkv.layout().shape();
    if qkv.dtype() != DType::F32 || shape.num_dims() != 3 || heads == 0 {
        return None;
    }
    let (b, n, d3) = (shape[0], shape[1], shape[2]);
    if d3 % 3 != 0 || (d3 / 3) % heads != 0 || n == 0 {
        return None;
    }
    Some((b, n, d3 / 3, d3 / 3 / heads))
}

fn f32_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape)),
        DType::F32,
    )
}

pub fn qkv_attention(qkv: &FlexTensor, heads: usize) -> Option<FlexTensor> {
    let (b, n, d, _) = dims(qkv, heads)?;
    let qkv = qkv.to_contiguous();
    let src = qkv.as_slice::<f32>()?;
    let mut out = vec![0.0f32; b * n * d];
    let dst = Output(out.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; n * n],
        |probs, task| head_forward(src, (b, n, d, heads), task, probs, dst),
    );
    Some(f32_tensor(out, vec![b, n, d]))
}

/// [`qkv_attention`] that also returns every head's attention probabilities `[B·H, N, N]`,
/// which its backward needs.
pub fn qkv_attention_keeping_probs(
    qkv: &FlexTensor,
    heads: usize,
) -> Option<(FlexTensor, FlexTensor)> {
    let (b, n, d, _) = dims(qkv, heads)?;
    let qkv = qkv.to_contiguous();
    let src = qkv.as_slice::<f32>()?;
    let mut out = vec![0.0f32; b * n * d];
    let mut probs = vec![0.0f32; b * heads * n * n];
    let dst = Output(out.as_mut_ptr());
    probs
        .par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(task, probs)| head_forward(src, (b, n, d, heads), task, probs, dst));
    Some((
        f32_tensor(out, vec![b, n, d]),
        f32_tensor(probs, vec![b * heads, n, n]),
    ))
}

/// One (batch item, head): `probs = softmax(scale · q·kᵀ)`, then its columns of the output are
/// `probs · v`.
fn head_forward(
    src: &[f32],
    (_b, n, d, heads): (usize, usize, usize, usize),
    task: usize,
    probs: &mut [f32],
    dst: Output,
) {
    let hd = d / heads;
    let d3 = 3 * d;
    let scale = (hd as f32).powf(-0.5);
    let (item, head) = (task / heads, task % heads);
    let q = &src[item * n * d3 + head * hd..];
    let k = &src[item * n * d3 + d + head * hd..];
    let v = &src[item * n * d3 + 2 * d + head * hd..];
    // SAFETY: q, k, v are `n × hd` views with row stride 3·D inside `src`; `probs` is `n × n`;
    // the output view (row stride D, this head's hd columns) is inside the output, and no other
    // task writes it.
    unsafe {
        // probs = scale · q·kᵀ (kᵀ: row i is feature i, column j is token j).
        product(
            (n, n, hd),
            probs.as_mut_ptr(),
            n,
            Operand::rows(q, d3),
            Operand::transposed(k, d3),
            scale,
        );
    }
    for row in probs.chunks_exact_mut(n) {
        math::softmax_in_place(row);
    }
    unsafe {
        product(
            (n, hd, n),
            dst.at(item * n * d + head * hd),
            d,
            Operand::rows(probs, n),
            Operand::rows(v, d3),
            1.0,
        );
    }
}

/// The gradient of [`qkv_attention`] with respect to `qkv`, given its output's gradient
/// `d_out: [B, N, D]` and the probabilities the forward kept. Per head, with P the
/// probabilities and dO the head's output gradient: dV = Pᵀ·dO, dP = dO·Vᵀ,
/// dS = P ⊙ (dP − rowsum(P ⊙ dP)) (softmax), dQ = scale·dS·K, dK = scale·dSᵀ·Q, each written
/// straight into its head's columns of the `[B, N, 3·D]` result.
pub fn qkv_attention_backward(
    qkv: &FlexTensor,
    probs: &FlexTensor,
    d_out: &FlexTensor,
    heads: usize,
) -> Option<FlexTensor> {
    let (b, n, d, hd) = dims(qkv, heads)?;
    let d3 = 3 * d;
    let scale = (hd as f32).powf(-0.5);
    let (qkv, probs, d_out) = (
        qkv.to_contiguous(),
        probs.to_contiguous(),
        d_out.to_contiguous(),
    );
    let (src, probs, d_out) = (
        qkv.as_slice::<f32>()?,
        probs.as_slice::<f32>()?,
        d_out.as_slice::<f32>()?,
    );
    if probs.len() != b * heads * n * n || d_out.len() != b * n * d {
        return None;
    }
    let mut grad = vec![0.0f32; b * n * d3];
    let dst = Output(grad.as_mut_ptr());
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; n * n],
        |ds, task| {
            let (item, head) = (task / heads, task % heads);
            let p = &probs[task * n * n..(task + 1) * n * n];
            let d_o = &d_out[item * n * d + head * hd..];
            let base = item * n * d3 + head * hd;
            let (q, k, v) = (&src[base..], &src[base + d..], &src[base + 2 * d..]);
            // SAFETY: every view is inside its buffer (row strides D, 3·D or N); this task alone
            // writes its head's q, k and v columns of `grad` for its batch item.
            unsafe {
                // dV = Pᵀ·dO
                product(
                    (n, hd, n),
                    dst.at(base + 2 * d),
                    d3,
                    Operand::transposed(p, n),
                    Operand::rows(d_o, d),
                    1.0,
                );
                // dP = dO·Vᵀ
                product(
                    (n, n, hd),
                    ds.as_mut_ptr(),
                    n,
                    Operand::rows(d_o, d),
                    Operand::transposed(v, d3),
                    1.0,
                );
            }
            for (ds, p) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                let dot: f32 = ds.iter().zip(p).map(|(g, p)| g * p).sum();
                for (g, &p) in ds.iter_mut().zip(p) {
                    *g = p * (*g - dot);
                }
            }
            unsafe {
                // dQ = scale · dS·K
                product(
                    (n, hd, n),
                    dst.at(base),
                    d3,
                    Operand::rows(ds, n),
                    Operand::rows(k, d3),
                    scale,
                );
                // dK = scale · dSᵀ·Q
                product(
                    (n, hd, n),
                    dst.at(base + d),
                    d3,
                    Operand::transposed(ds, n),
                    Operand::rows(q, d3),
                    scale,
                );
            }
        },
    );
    Some(f32_tensor(grad, vec![b, n, d3]))
}
