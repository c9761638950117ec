//! `act(x·W + b)` in one pass over the output for Flex.
//!
//! Burn composes a linear layer as a batched matmul (Flex packs the weight once per batch
//! item), a broadcast bias add (a second sweep over the output) and, in the MLP, a GELU (a
//! third, with a scalar `erf`). Here the output rows are first filled with the bias, the
//! matmul accumulates onto them (gemm's `dst = dst + x·W`), and GELU runs on each thread's rows
//! right after its product, while they are still in cache.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::Activation;
use rayon::prelude::*;

use super::math;

/// Rows per task below which splitting the product over threads costs more than it gains.
const MIN_ROWS_PER_TASK: usize = 32;

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
    // Contiguous row blocks, one per thread: each packs the weight once (as Flex's
    // batch-parallel matmul does per batch item) and then needs no synchronisation.
    let tasks = rayon::current_num_threads()
        .min(rows / MIN_ROWS_PER_TASK)
        .max(1);
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
                gemm::Parallelism::None,
            );
        }
        if activation == Activation::Gelu {
            math::map_in_place(out, math::gelu);
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
