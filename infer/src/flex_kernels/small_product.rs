//! Products of the small matrices a covariance head makes for each image (tokens × D by D × d',
//! d' × d' for the covariance and every Newton–Schulz step), kept in registers.
//!
//! The gemm crate packs both operands and dispatches per call; at d' = 32 that overhead was
//! most of a head's time (1.5 ms of the demo's 7.5 ms block at batch 64, though a head has an
//! eighth of a block's MACs). Here each 4 × 16 block of the result (4 × 32 on AVX-512) is
//! summed in registers over the whole inner dimension, one fused multiply-add at a time in
//! order, so every build (AVX-512, AVX2 + FMA, baseline, where `mul_add` is libm's exact
//! `fmaf`) gives the same bits. Callers compile it into their vectorised body (`best_simd!`):
//! it is `inline(always)` and, but for the AVX-512 block's intrinsics, plain arithmetic.

/// Rows of the result summed together: four rows × 16 columns are 8 AVX2 registers.
const ROWS: usize = 4;
/// Columns summed together.
const COLS: usize = 16;
/// Columns summed together where the CPU has AVX-512: 4 × 32 are 8 of its 16-lane registers,
/// eight independent chains of fused multiply-adds, as many as its two FMA pipes of four
/// cycles' latency keep busy (4 × 16 is four, half of them idle).
const WIDE_COLS: usize = 32;

/// Whether to sum [`WIDE_COLS`] columns together: on AVX-512 (detected once; a cached load).
#[inline(always)]
fn wide_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A matrix read in place at `values[i·row + l·col]`: rows of a buffer, or its transpose.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub values: &'a [f32],
    pub row: usize,
    pub col: usize,
}

impl<'a> Strided<'a> {
    /// Row-major, rows `row` apart.
    pub fn rows(values: &'a [f32], row: usize) -> Self {
        Self {
            values,
            row,
            col: 1,
        }
    }

    /// The transpose of a row-major matrix whose rows are `row` apart.
    pub fn transposed(values: &'a [f32], row: usize) -> Self {
        Self {
            values,
            row: 1,
            col: row,
        }
    }

    /// Element (i, l).
    ///
    /// # Safety
    /// `i·row + l·col < values.len()` ([`small_product`] checks it for its whole range once).
    #[inline(always)]
    unsafe fn at(&self, i: usize, l: usize) -> f32 {
        // SAFETY: as the caller promised.
        unsafe { *self.values.get_unchecked(i * self.row + l * self.col) }
    }
}

/// `c = scale · a·b` for `a: m × k` (read through its strides), `b: k × n` row-major (rows
/// `b_row` apart) and `c: m × n` row-major (rows `c_row` apart). Each element is
/// `scale · fma(a₂, b₂, fma(a₁, b₁, fma(a₀, b₀, 0)))…`, in that order, whatever the CPU.
#[inline(always)]
pub(super) fn small_product(
    (m, n, k): (usize, usize, usize),
    a: Strided<'_>,
    b: &[f32],
    b_row: usize,
    c: &mut [f32],
    c_row: usize,
    scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k == 0 || (m - 1) * a.row + (k - 1) * a.col < a.values.len(),
        "lhs out of bounds"
    );
    assert!(
        k == 0 || (k - 1) * b_row + n <= b.len(),
        "rhs out of bounds"
    );
    assert!((m - 1) * c_row + n <= c.len(), "output out of bounds");
    let product = Product {
        a,
        b,
        b_row,
        c_row,
        scale,
        n,
        k,
        wide: n >= WIDE_COLS && wide_tiles(),
    };
    let mut i = 0;
    if n < COLS {
        // Narrow (a bottleneck of 8): twice the rows, so as many sums are in flight.
        while i + 2 * ROWS <= m {
            product.rows::<{ 2 * ROWS }>(i, c);
            i += 2 * ROWS;
        }
    }
    while i + ROWS <= m {
        product.rows::<ROWS>(i, c);
        i += ROWS;
    }
    while i < m {
        product.rows::<1>(i, c);
        i += 1;
    }
}

/// One product's operands and sizes, shared by its tiles (bounds checked by [`small_product`]).
struct Product<'a> {
    a: Strided<'a>,
    b: &'a [f32],
    b_row: usize,
    c_row: usize,
    scale: f32,
    n: usize,
    k: usize,
    /// [`WIDE_COLS`] columns at a time first.
    wide: bool,
}

impl Product<'_> {
    /// Rows `i..i + R` of the result, 32 (AVX-512) or 16 columns at a time, then 8, then one
    /// by one.
    #[inline(always)]
    fn rows<const R: usize>(&self, i: usize, c: &mut [f32]) {
        let mut j = 0;
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            while j + WIDE_COLS <= self.n {
                // SAFETY: `wide` is set only where the CPU has AVX-512F; j + 32 ≤ n.
                unsafe { self.wide_tile::<R>(i, j, c) };
                j += WIDE_COLS;
            }
        }
        while j + COLS <= self.n {
            self.tile::<R, COLS>(i, j, c);
            j += COLS;
        }
        if j + 8 <= self.n {
            self.tile::<R, 8>(i, j, c);
            j += 8;
        }
        while j < self.n {
            self.tile::<R, 1>(i, j, c);
            j += 1;
        }
    }

    /// The `R × 32` tile at (i, j) in AVX-512 registers, written out with intrinsics: left to
    /// itself the compiler gathered each step's four lhs values into one vector and shuffled
    /// them apart again, which cost more than the wider tile saved. The same fused
    /// multiply-adds in the same order as [`Self::tile`], so the same bits.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `i + R ≤ m` and `j + 32 ≤ n`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn wide_tile<const R: usize>(&self, i: usize, j: usize, c: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for l in 0..self.k {
            // SAFETY: l < k and j + 32 ≤ n: inside b, as [`small_product`] checked.
            let (b0, b1) = unsafe {
                let bl = self.b.as_ptr().add(l * self.b_row + j);
                (_mm512_loadu_ps(bl), _mm512_loadu_ps(bl.add(16)))
            };
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: i + r < m and l < k, inside a's checked range.
                let av = _mm512_set1_ps(unsafe { self.a.at(i + r, l) });
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        let scale = _mm512_set1_ps(self.scale);
        for (r, row) in acc.iter().enumerate() {
            let out = &mut c[(i + r) * self.c_row + j..][..WIDE_COLS];
            // SAFETY: `out` holds 32 floats.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(row[0], scale));
                _mm512_storeu_ps(out.as_mut_ptr().add(16), _mm512_mul_ps(row[1], scale));
            }
        }
    }

    /// The `R × W` tile at (i, j), summed in a register-sized accumulator.
    #[inline(always)]
    fn tile<const R: usize, const W: usize>(&self, i: usize, j: usize, c: &mut [f32]) {
        let mut acc = [[0.0f32; W]; R];
        for l in 0..self.k {
            // SAFETY: l < k and j + W ≤ n, so this lies inside b ([`small_product`] checked
            // (k − 1)·b_row + n ≤ b.len()).
            let bl = unsafe { &*(self.b.as_ptr().add(l * self.b_row + j) as *const [f32; W]) };
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: i + r < m and l < k, inside a's checked range.
                let av = unsafe { self.a.at(i + r, l) };
                for (s, &bv) in row.iter_mut().zip(bl) {
                    *s = av.mul_add(bv, *s);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let out = &mut c[(i + r) * self.c_row + j..][..W];
            for (o, &s) in out.iter_mut().zip(row) {
                *o = s * self.scale;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        (m, n, k): (usize, usize, usize),
        a: Strided<'_>,
        b: &[f32],
        b_row: usize,
        scale: f32,
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for l in 0..k {
                    // SAFETY: inside the test's own buffers.
                    s = unsafe { a.at(i, l) }.mul_add(b[l * b_row + j], s);
                }
                c[i * n + j] = s * scale;
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    }

    /// The product compiled for the CPU's best instructions, as the kernels call it.
    fn best(dims: (usize, usize, usize), a: Strided<'_>, b: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![f32::NAN; dims.0 * dims.1];
        fn run(dims: (usize, usize, usize), a: Strided<'_>, b: &[f32], n: usize, c: &mut [f32]) {
            crate::flex_kernels::math::best_simd!((dims: (usize, usize, usize), a: Strided<'_>, b: &[f32], n: usize, c: &mut [f32]) {
                small_product(dims, a, b, n, c, n, 0.5)
            })
        }
        run(dims, a, b, n, &mut c);
        c
    }

    /// Every tile shape (8, 4 and 1 rows; 16, 8 and 1 columns), plain and transposed lhs: the
    /// same bits as the in-order scalar sum of fused multiply-adds, from the baseline build and
    /// from the vectorised one (AVX-512 or AVX2 + FMA where the CPU has them), so a model
    /// answers the same on any x86-64.
    #[test]
    fn every_build_gives_the_bits_of_the_in_order_sum() {
        for (m, n, k) in [
            (1, 1, 1),
            (5, 3, 7),
            (32, 32, 32),
            (49, 32, 96),
            (9, 25, 17),
            (3, 40, 0),
            (37, 8, 96),
            (50, 96, 8),
        ] {
            let a = values(m * k.max(1), 1);
            let b = values(k.max(1) * n, 2);
            for transposed in [false, true] {
                let lhs = if transposed {
                    Strided::transposed(&a, m)
                } else {
                    Strided::rows(&a, k)
                };
                let want = reference((m, n, k), lhs, &b, n, 0.5);
                let mut c = vec![f32::NAN; m * n];
                small_product((m, n, k), lhs, &b, n, &mut c, n, 0.5);
                assert_eq!(c, want, "baseline {m}×{n}×{k} {transposed}");
                assert_eq!(
                    best((m, n, k), lhs, &b, n),
                    want,
                    "vectorised {m}×{n}×{k} {transposed}"
                );
            }
        }
    }

    #[test]
    fn writes_inside_a_larger_buffer_only_where_asked() {
        let (m, n, k) = (6, 20, 5);
        let a = values(m * k, 3);
        let b = values(k * 24, 4);
        let mut c = vec![7.0f32; m * 24];
        small_product((m, n, k), Strided::rows(&a, k), &b, 24, &mut c, 24, 1.0);
        let want = reference((m, n, k), Strided::rows(&a, k), &b, 24, 1.0);
        for i in 0..m {
            assert_eq!(&c[i * 24..i * 24 + n], &want[i * n..(i + 1) * n]);
            assert!(c[i * 24 + n..(i + 1) * 24].iter().all(|&v| v == 7.0));
        }
    }
}
