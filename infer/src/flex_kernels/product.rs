//! One single-threaded gemm call on matrices read in place inside larger buffers, by their
//! strides: what the attention kernels (heads inside `qkv`) and the Newton–Schulz kernel (one
//! image's matrices) are made of.

/// A matrix operand of [`product`] inside a larger buffer, by its element strides.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    ptr: *const f32,
    row_stride: usize,
    col_stride: usize,
}

impl Operand {
    /// Rows `row_stride` apart, each contiguous: a head's q, k or v inside `qkv`, or a scratch
    /// matrix.
    pub(super) fn rows(values: &[f32], row_stride: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of [`Operand::rows`], read in place (no copy).
    pub(super) fn transposed(values: &[f32], row_stride: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            row_stride: 1,
            col_stride: row_stride,
        }
    }
}

/// `dst = scale · lhs·rhs` (`m × k` times `k × n`) on this thread, `dst` rows `dst_row_stride`
/// apart, each contiguous.
///
/// # Safety
/// Every operand, at its strides, and the `m × n` destination lie inside their buffers, and
/// nothing else writes the destination meanwhile.
pub(super) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_row_stride: usize,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
) {
    // SAFETY: as the caller promised.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            false,
            lhs.ptr,
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.ptr,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
