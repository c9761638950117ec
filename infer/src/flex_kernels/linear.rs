//! `act(x·W + b)` in one pass over the output for Flex.
//!
//! Burn composes a linear layer as a batched matmul (Flex packs the weight once per batch
//! item), a broadcast bias add (a second sweep over the output) and, in the MLP, a GELU (a
//! third, with a scalar `erf`; the adapters' ReLU likewise). Here the output rows are first
//! filled with the bias, the matmul accumulates onto them (gemm's `dst = dst + x·W`), and the
//! activation runs on each thread's rows right after its product, while they are still in
//! cache.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::Activation;
use rayon::prelude::*;

use super::math;

/// How the product is spread over threads depends on the shapes only, never on the thread
/// count: gemm's result for a row depends on how many rows it is given, and seeded training
/// must give the same bits on any machine.
///
/// Small weights (ViT-Ti, the demo: packing them is cheap): independent blocks of about
/// `ROWS_PER_TASK` rows, each a single-threaded gemm that packs the weight itself; this beats
/// gemm's own threading on these narrow products (ViT-Ti batch 1: 0.90 against 0.79 of
/// PyTorch). Large weights (ViT-S's qkv and MLP, ViT-B): one gemm over all rows with its own
/// threading, which packs each weight block once for every thread (ViT-B batch 16: 1.00 against
/// 0.88 with row blocks, whose every block re-packs a 9 MiB weight).
const ROWS_PER_TASK: usize = 64;
const ONE_GEMM_MIN_WEIGHT: usize = 1 << 18;
/// Below this many multiply-adds gemm runs on one thread (Flex's threshold).
const THREADED_GEMM_MIN_MACS: usize = 192 * 192 * 192;

pub fn linear(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    activation: Activation,
) -> Option<FlexTensor> {
    let f32s = |t: &FlexTensor| t.dtype() == DType::F32;
    if !f32s(x) || !f32s(weight) || !bias.is_none_or(f32s) {
        return None;
    }
    let w_shape = weight.layout().shape();
    let x_shape = x.layout().shape();
    if w_shape.num_dims() != 2 || x_shape.num_dims() == 0 {
        return None;
    }
    let (k, m) = (w_shape[0], w_shape[1]);
    if x_shape[x_shape.num_dims() - 1] != k || k == 0 || m == 0 {
        return None;
    }
    let (w_rs, w_cs) = (weight.layout().strides()[0], weight.layout().strides()[1]);
    if w_rs < 0 || w_cs < 0 {
        return None;
    }
    let bias = match bias {
        Some(b) if b.layout().shape().num_elements() != m => return None,
        Some(b) => Some(b.to_contiguous()),
        None => None,
    };
    let x = x.to_contiguous();
    let xs = x.as_slice::<f32>()?;
    let rows = xs.len() / k;
    let w = &weight.storage::<f32>()[weight.layout().start_offset()..];

    let mut out = match &bias {
        Some(b) => b.as_slice::<f32>()?.repeat(rows),
        None => vec![0.0f32; rows * m],
    };
    // One gemm, or contiguous row blocks of about ROWS_PER_TASK rows, as even as possible,
    // which rayon spreads over the threads (see ROWS_PER_TASK).
    let one_gemm = k * m >= ONE_GEMM_MIN_WEIGHT;
    let tasks = if one_gemm {
        1
    } else {
        rows.div_ceil(ROWS_PER_TASK).max(1)
    };
    let rows_per_task = rows.div_ceil(tasks);
    let product = |(task, out): (usize, &mut [f32])| {
        let first = task * rows_per_task;
        let n_rows = out.len() / m;
        // SAFETY: `out` is `n_rows × m` row-major; `xs[first·k..]` holds `n_rows × k` row-major;
        // `w` holds the `k × m` weight at strides (w_rs, w_cs), all non-negative and in bounds.
        unsafe {
            gemm::gemm(
                n_rows,
                m,
                k,
                out.as_mut_ptr(),
                1,
                m as isize,
                bias.is_some(),
                xs[first * k..].as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                w_cs,
                w_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                if one_gemm && n_rows * m * k >= THREADED_GEMM_MIN_MACS {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
        // Each function passed as its own type (not a fn pointer), so it inlines and vectorises.
        fn apply(
            out: &mut [f32],
            parallel_rows: Option<usize>,
            f: impl Fn(f32) -> f32 + Copy + Sync,
        ) {
            match parallel_rows {
                Some(len) => out
                    .par_chunks_mut(len)
                    .for_each(|rows| math::map_in_place(rows, f)),
                None => math::map_in_place(out, f),
            }
        }
        let parallel_rows = one_gemm.then_some(ROWS_PER_TASK * m);
        match activation {
            Activation::None => {}
            Activation::Gelu => apply(out, parallel_rows, math::gelu),
            Activation::Relu => apply(out, parallel_rows, math::relu),
        }
    };
    if tasks == 1 {
        product((0, &mut out));
    } else {
        out.par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(product);
    }

    let mut shape: Vec<usize> = x_shape.iter().copied().collect();
    *shape.last_mut()? = m;
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(shape)),
        DType::F32,
    ))
}
