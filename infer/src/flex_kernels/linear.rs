//! `act(x·W + b)` in one pass over the output for Flex.
//!
//! Burn composes a linear layer as a batched matmul (Flex packs the weight once per batch
//! item), a broadcast bias add (a second sweep over the output) and, in the MLP, a GELU (a
//! third, with a scalar `erf`; the adapters' ReLU likewise). Here each thread fills its block
//! of output rows with the bias, the matmul accumulates onto them (gemm's `dst = dst + x·W`),
//! and the activation runs on those rows right after the product, while they are still in
//! cache. Without a bias gemm writes the rows outright (nothing is zeroed first). Training
//! keeps `x·W + b` for the activation's derivative: [`linear_keeping_pre_activation`] writes
//! both in the same pass.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::Activation;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::math;

/// How the product is spread over threads depends on the shapes only, never on the thread
/// count: gemm's result for a row depends on how many rows it is given, and seeded training
/// must give the same bits on any machine.
///
/// Small weights (ViT-Ti, the demo: packing them is cheap): independent blocks of rows, each a
/// single-threaded gemm that packs the weight itself; this beats gemm's own threading on these
/// narrow products (ViT-Ti batch 1: 0.90 against 0.79 of PyTorch). Every block packs the whole
/// weight once, so blocks of [`MIN_ROWS_PER_TASK`] rows (which split a single ViT image four
/// ways) spent 8 % of the demo's training step packing; a large batch is cut into
/// [`TASKS_PER_PRODUCT`] blocks of up to [`MAX_ROWS_PER_TASK`] rows instead (3 %), still enough
/// tasks for 16 threads. Large weights (ViT-S's qkv and MLP, ViT-B), re-packed by every block
/// (up to 9 MiB; blocks of 64 rows made ViT-B batch 16 0.88 of PyTorch against 1.00): from
/// `LARGE_WEIGHT_BLOCKS × LARGE_WEIGHT_MIN_ROWS_PER_TASK` rows on (a ViT-B/16 batch of 16),
/// that many blocks (or twice as many, from twice the rows), so the re-packing stays a few per
/// cent and the blocks share out evenly on 2, 4, 8 or 16 threads (three blocks on two threads
/// made DINOv2-S's full depth at batch 32 a fifth slower); fewer rows are one gemm with its own
/// threading, as is each block when there are more threads than blocks. gemm's threading cuts
/// every depth slice statically between the threads and joins them after it, so a thread
/// delayed by another tenant of the machine holds the other at every join, where rayon hands
/// independent blocks to whichever thread is free: ViT-B batch 16 went from 0.90 to 1.12 of
/// PyTorch forward and 0.93 to 1.04 in the frozen training step (docs/benchmarks.md, sixth
/// round). gemm's arithmetic, hence the bits, does not depend on how many threads run it.
const MIN_ROWS_PER_TASK: usize = 64;
/// From this many rows up to [`MIN_ROWS_PER_TASK`], two blocks rather than one: a single
/// image of the demo model (50 tokens) is then spread over two threads, as two images were.
/// On a pool thread ([`crate::on_compute_thread`], as `dmpo` runs), its block at batch 1 went
/// from 106 to 87 µs, what the images left after the first exits run at (docs/benchmarks.md,
/// seventh round); from `main`, 125 to 122 µs.
const MIN_ROWS_TO_SPLIT: usize = 32;
const MAX_ROWS_PER_TASK: usize = 256;
const TASKS_PER_PRODUCT: usize = 16;
const LARGE_WEIGHT: usize = 1 << 18;
const LARGE_WEIGHT_MIN_ROWS_PER_TASK: usize = 384;
const LARGE_WEIGHT_BLOCKS: usize = 8;
/// Below this many multiply-adds gemm runs on one thread (Flex's threshold).
const THREADED_GEMM_MIN_MACS: usize = 192 * 192 * 192;
/// Rows per parallel chunk of the activation after one threaded gemm.
const ACTIVATION_CHUNK_ROWS: usize = 64;

/// The rows each single-threaded gemm takes: a function of the shape only (see above).
fn rows_per_task(rows: usize) -> usize {
    (rows / TASKS_PER_PRODUCT).clamp(MIN_ROWS_PER_TASK, MAX_ROWS_PER_TASK)
}

pub fn linear(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    activation: Activation,
) -> Option<FlexTensor> {
    linear_with(x, weight, bias, activation, false).map(|(out, _)| out)
}

/// `(act(x·W + b), x·W + b)`: the output and, when there is an activation, what it was applied
/// to (for its derivative under autodiff), both from one pass; `None` as [`linear`].
pub fn linear_keeping_pre_activation(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    activation: Activation,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
    linear_with(x, weight, bias, activation, activation != Activation::None)
}

fn linear_with(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
    activation: Activation,
    keep_pre_activation: bool,
) -> Option<(FlexTensor, Option<FlexTensor>)> {
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
    let bias = match &bias {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    let x = x.to_contiguous();
    let xs = x.as_slice::<f32>()?;
    let rows = xs.len() / k;
    let w = &weight.storage::<f32>()[weight.layout().start_offset()..];

    // Written in full below (bias rows or gemm's product, then the activation) before being
    // read; `Vec::with_capacity` spares zeroing what gemm overwrites.
    let mut out: Vec<f32> = Vec::with_capacity(rows * m);
    let mut pre_activation: Option<Vec<f32>> =
        keep_pre_activation.then(|| Vec::with_capacity(rows * m));
    // Contiguous row blocks (see `rows_per_task`), as even as possible, which rayon spreads
    // over the threads; one block runs straight on this thread, or (large weights) spread by
    // gemm itself.
    let large_weight = k * m >= LARGE_WEIGHT;
    let tasks = if large_weight {
        match rows / (LARGE_WEIGHT_BLOCKS * LARGE_WEIGHT_MIN_ROWS_PER_TASK) {
            0 => 1,
            1 => LARGE_WEIGHT_BLOCKS,
            _ => 2 * LARGE_WEIGHT_BLOCKS,
        }
    } else if (MIN_ROWS_TO_SPLIT..MIN_ROWS_PER_TASK).contains(&rows) {
        2
    } else {
        rows.div_ceil(rows_per_task(rows)).max(1)
    };
    let rows_per_task = rows.div_ceil(tasks);
    let block = Block {
        xs,
        w,
        w_rs,
        w_cs,
        bias,
        k,
        m,
        activation,
        threaded: large_weight && rayon::current_num_threads() > tasks,
    };
    let (out_all, pre_all) = (
        &mut out.spare_capacity_mut()[..rows * m],
        pre_activation
            .as_mut()
            .map(|pre| &mut pre.spare_capacity_mut()[..rows * m]),
    );
    if tasks == 1 {
        // Straight on this thread: fewer than `MIN_ROWS_TO_SPLIT` rows are not worth a hand-off.
        block.run(0, out_all, pre_all);
    } else {
        let out_blocks = out_all.par_chunks_mut(rows_per_task * m);
        match pre_all {
            Some(pre) => out_blocks
                .zip(pre.par_chunks_mut(rows_per_task * m))
                .enumerate()
                .for_each(|(task, (out, pre))| block.run(task * rows_per_task, out, Some(pre))),
            None => out_blocks
                .enumerate()
                .for_each(|(task, out)| block.run(task * rows_per_task, out, None)),
        }
    }
    // SAFETY: every block of `out` and `pre_activation` (they cover all rows · m elements) was
    // written by `Block::run`.
    unsafe {
        out.set_len(rows * m);
        if let Some(pre) = &mut pre_activation {
            pre.set_len(rows * m);
        }
    }

    let mut shape: Vec<usize> = x_shape.iter().copied().collect();
    *shape.last_mut()? = m;
    let tensor = |values: Vec<f32>| {
        FlexTensor::new(
            Bytes::from_elems(values),
            Layout::contiguous(Shape::from(shape.clone())),
            DType::F32,
        )
    };
    Some((tensor(out), pre_activation.map(tensor)))
}

/// One call's operands: `x` (rows × k, row-major), the weight (k × m at strides
/// (w_rs, w_cs)), the bias and the activation.
struct Block<'a> {
    xs: &'a [f32],
    w: &'a [f32],
    w_rs: isize,
    w_cs: isize,
    bias: Option<&'a [f32]>,
    k: usize,
    m: usize,
    activation: Activation,
    /// Fewer blocks than threads (a large weight): gemm and the activation spread each block
    /// over the threads as well.
    threaded: bool,
}

impl Block<'_> {
    /// Writes the rows from `first` on into `out` (`n_rows × m`): act(x·W + b), and x·W + b
    /// into `pre` when given (`out` is then computed from it).
    fn run(
        &self,
        first: usize,
        out: &mut [MaybeUninit<f32>],
        pre: Option<&mut [MaybeUninit<f32>]>,
    ) {
        // Each function passed as its own type (not a fn pointer), so it inlines and vectorises.
        fn activate(
            out: &mut [MaybeUninit<f32>],
            pre: Option<&[f32]>,
            chunk: usize,
            f: impl Fn(f32) -> f32 + Copy + Sync,
        ) {
            let one = |out: &mut [MaybeUninit<f32>], pre: Option<&[f32]>| {
                if let Some(pre) = pre {
                    // SAFETY: `pre` holds `out.len()` values; f32 and MaybeUninit<f32> share a
                    // layout; the two buffers are distinct allocations.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            pre.as_ptr(),
                            out.as_mut_ptr().cast(),
                            out.len(),
                        )
                    };
                }
                // SAFETY: initialised by gemm (no `pre`) or by the copy just above.
                math::map_in_place(unsafe { assume_init(out) }, f);
            };
            if chunk >= out.len() {
                return one(out, pre);
            }
            match pre {
                Some(pre) => out
                    .par_chunks_mut(chunk)
                    .zip(pre.par_chunks(chunk))
                    .for_each(|(out, pre)| one(out, Some(pre))),
                None => out.par_chunks_mut(chunk).for_each(|out| one(out, None)),
            }
        }
        // Rows per parallel chunk of the activation when gemm spread the product itself.
        let chunk = if self.threaded {
            ACTIVATION_CHUNK_ROWS * self.m
        } else {
            usize::MAX
        };
        match pre {
            None => {
                self.product(first, out);
                match self.activation {
                    Activation::None => {}
                    Activation::Gelu => activate(out, None, chunk, math::gelu),
                    Activation::Relu => activate(out, None, chunk, math::relu),
                }
            }
            Some(pre) => {
                self.product(first, pre);
                // SAFETY: written by `product` just above.
                let pre: &[f32] = unsafe { assume_init(pre) };
                match self.activation {
                    Activation::None => activate(out, Some(pre), chunk, |z| z),
                    Activation::Gelu => activate(out, Some(pre), chunk, math::gelu),
                    Activation::Relu => activate(out, Some(pre), chunk, math::relu),
                }
            }
        }
    }

    /// x·W + b for the rows from `first` on into `dst` (`n_rows × m`, all of it written).
    fn product(&self, first: usize, dst: &mut [MaybeUninit<f32>]) {
        let (k, m) = (self.k, self.m);
        let n_rows = dst.len() / m;
        if let Some(bias) = self.bias {
            for row in dst.chunks_exact_mut(m) {
                // SAFETY: `row` and `bias` are m f32s each; f32 and MaybeUninit<f32> share a
                // layout.
                unsafe { std::ptr::copy_nonoverlapping(bias.as_ptr(), row.as_mut_ptr().cast(), m) };
            }
        }
        // SAFETY: `dst` is `n_rows × m` row-major, initialised where gemm reads it (the bias
        // rows; with `read_dst` false gemm writes every element without reading it);
        // `xs[first·k..]` holds `n_rows × k` row-major; `w` holds the `k × m` weight at strides
        // (w_rs, w_cs), all non-negative and in bounds.
        unsafe {
            gemm::gemm(
                n_rows,
                m,
                k,
                dst.as_mut_ptr().cast::<f32>(),
                1,
                m as isize,
                self.bias.is_some(),
                self.xs[first * k..].as_ptr(),
                1,
                k as isize,
                self.w.as_ptr(),
                self.w_cs,
                self.w_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                if self.threaded && n_rows * m * k >= THREADED_GEMM_MIN_MACS {
                    gemm::Parallelism::Rayon(0)
                } else {
                    gemm::Parallelism::None
                },
            );
        }
    }
}

/// `values` as initialised floats.
///
/// # Safety
/// Every element of `values` has been written.
unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller guarantees initialisation; the layouts are the same.
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len()) }
}
