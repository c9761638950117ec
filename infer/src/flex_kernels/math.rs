//! Element-wise math written so the compiler vectorises it: branch-free polynomials, no libm
//! calls in the loop. Flex's GELU calls libm's scalar `erff` once per element (a share of a ViT
//! forward in the profile of docs/benchmarks.md); these run 8 lanes at a time with AVX2.

/// erf(x), rational approximation on [-4, 4] (beyond, |erf| = 1 to fp32 precision), the one
/// Eigen and XLA use for fp32. Absolute error ≤ 5e-7 (libm's `erff`: ~1e-7), checked against
/// f64 over a dense grid by the test below.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const A: [f32; 7] = [
        -2.726_142_3e-10,
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ];
    const B: [f32; 5] = [
        -1.456_607_2e-5,
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329e-3,
        -1.426_474e-2,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = A[0];
    for a in &A[1..] {
        p = p * x2 + a;
    }
    let mut q = B[0];
    for b in &B[1..] {
        q = q * x2 + b;
    }
    x * p / q
}

/// Exact GELU, x·Φ(x) = ½·x·(1 + erf(x/√2)), as timm's `nn.GELU()`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// max(0, x), as a plain function so it can be passed where [`gelu`] is.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// GELU'(x) = Φ(x) + x·φ(x), the factor GELU's backward multiplies the gradient by.
#[inline(always)]
pub fn gelu_derivative(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * INV_SQRT_2PI * exp_nonpositive(-0.5 * x * x)
}

/// eˣ for x ≤ 0 (softmax after subtracting the row maximum): Cephes' `expf` polynomial after
/// range reduction by powers of two, ≤ 2 ulp; below -87 it flushes to 0.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Also ≤ 0 and NaN to -87 (as `max` does; `clamp` would keep the NaN), which the
    // conversion below relies on.
    #[allow(clippy::manual_clamp)]
    let x = x.max(-87.0).min(0.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // 2ⁿ through the exponent bits; n ≥ -126 here, so the result stays normal. `as i32` would
    // saturate and map NaN to 0, which the compiler does one lane at a time (a scalar
    // conversion and two conditional moves per element, most of GELU's backward in the profile);
    // n is a whole number in [-126, 0], where the plain conversion is exact and vectorises.
    // SAFETY: n is finite and within i32 (x ∈ [-87, 0], so x·log₂e + ½ ∈ [-125.1, 0.5]).
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    e * scale
}

/// `$body`, compiled three times: for AVX-512F, for AVX2 + FMA and for the baseline target,
/// the best the CPU has picked at run time, so the loops in it are vectorised on any x86-64
/// without `-C target-cpu`. The parameters name what `$body` uses. No version reorders a sum:
/// the results are the same bits whichever runs.
macro_rules! best_simd {
    (($($arg:ident: $ty:ty),*) $body:block) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $body
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $body
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above), hence AVX2 and FMA.
                return unsafe { avx512($($arg),*) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                return unsafe { avx2($($arg),*) };
            }
        }
        $body
    }};
}
pub(super) use best_simd;

/// Applies `f` to every element, vectorised for the CPU it runs on (`best_simd!`).
#[inline(always)]
pub fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    best_simd!((values: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
        for v in values {
            *v = f(*v);
        }
    })
}

/// `out[i] = f(out[i], other[i])`, vectorised as [`map_in_place`] is. `other` must be at least
/// as long as `out`.
#[inline(always)]
pub fn zip_in_place(out: &mut [f32], other: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    let other = &other[..out.len()];
    best_simd!((out: &mut [f32], other: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
        for (o, &v) in out.iter_mut().zip(other) {
            *o = f(*o, v);
        }
    })
}

/// Softmax of one row in place: max, exp and sum, scale (three vectorised sweeps).
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) {
    best_simd!((row: &mut [f32]) { softmax_body(row) })
}

#[inline(always)]
fn softmax_body(row: &mut [f32]) {
    // Eight partial maxima / sums so the reductions vectorise (a single accumulator is a
    // serial dependency the compiler may not reorder for floats).
    let mut max = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            max[i] = max[i].max(c[i]);
        }
    }
    let max = chunks.remainder().iter().fold(
        max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)),
        |a, &b| a.max(b),
    );
    for v in row.iter_mut() {
        *v = exp_nonpositive(*v - max);
    }
    let inv = 1.0 / lane_sum(row);
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// The sum of `values` in eight interleaved partial sums, added up at the end: a single
/// accumulator is a serial chain of dependent adds the compiler may not reorder for floats;
/// eight vectorise. The order is fixed, so every build gives the same bits.
#[inline(always)]
pub fn lane_sum(values: &[f32]) -> f32 {
    let mut sum = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            sum[i] += c[i];
        }
    }
    sum.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// A LayerNorm's parameters, borrowed from its tensors.
#[derive(Clone, Copy)]
pub struct LayerNormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: Option<&'a [f32]>,
    pub eps: f32,
}

/// LayerNorm of one row in place, as Burn's: `(x − mean) / √(var + ε) · γ + β`, the mean and
/// the variance summed as [`lane_sum`] does. Returns the row's mean and `1 / √(var + ε)` (what
/// the backward needs).
#[inline(always)]
pub fn layer_norm_in_place(row: &mut [f32], norm: LayerNormParams<'_>) -> (f32, f32) {
    let stats = row_stats(row, norm.eps);
    let pairs = row.iter_mut().map(|v| {
        let x = *v;
        (v, x)
    });
    normalize(pairs, stats, norm);
    stats
}

/// Every row of `src` (`[n, dim]`, row-major) layer-normed into `dst` as
/// [`layer_norm_in_place`] does (the same bits), read from `src` rather than from a copy
/// made first: what the covariance heads and bypass modules norm.
#[inline(always)]
pub fn layer_norm_rows(src: &[f32], dst: &mut [f32], dim: usize, norm: LayerNormParams<'_>) {
    assert_eq!(src.len(), dst.len(), "one output per input");
    if dim == 0 {
        return;
    }
    for (row, out) in src.chunks_exact(dim).zip(dst.chunks_exact_mut(dim)) {
        normalize(
            out.iter_mut().zip(row.iter().copied()),
            row_stats(row, norm.eps),
            norm,
        );
    }
}

/// A row's mean and `1 / √(var + ε)`: the mean as [`lane_sum`], the variance in the same
/// eight lanes.
#[inline(always)]
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let dim = row.len() as f32;
    let mean = lane_sum(row) / dim;
    let mut centred = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            centred[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (centred.iter().sum::<f32>() + tail) / dim;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `out = (x − mean) · inv · γ + β` for each `(out, x)` of a row.
#[inline(always)]
fn normalize<'a>(
    pairs: impl Iterator<Item = (&'a mut f32, f32)>,
    (mean, inv): (f32, f32),
    norm: LayerNormParams<'_>,
) {
    let LayerNormParams { gamma, beta, .. } = norm;
    match beta {
        Some(beta) => {
            for (((o, x), g), b) in pairs.zip(gamma).zip(beta) {
                *o = (x - mean) * inv * g + b;
            }
        }
        None => {
            for ((o, x), g) in pairs.zip(gamma) {
                *o = (x - mean) * inv * g + 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| lo + (hi - lo) * i as f32 / steps as f32)
    }

    #[test]
    fn erf_is_within_5e_7_of_f64_everywhere() {
        let worst = grid(-8.0, 8.0, 400_000)
            .map(|x| (erf(x) as f64 - libm::erf(x as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 5e-7, "erf max abs error {worst:e}");
    }

    #[test]
    fn gelu_matches_the_exact_definition() {
        let worst = grid(-10.0, 10.0, 200_000)
            .map(|x| {
                let exact = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
                (gelu(x) as f64 - exact).abs() / exact.abs().max(1.0)
            })
            .fold(0.0, f64::max);
        assert!(worst <= 2e-6, "gelu max error {worst:e}");
        let mut v: Vec<f32> = grid(-3.0, 3.0, 1000).collect();
        let expected: Vec<f32> = v.iter().map(|&x| gelu(x)).collect();
        map_in_place(&mut v, gelu);
        assert_eq!(v, expected);
    }

    #[test]
    fn gelu_derivative_matches_the_exact_definition() {
        let worst = grid(-10.0, 10.0, 200_000)
            .map(|x| {
                let x64 = x as f64;
                let cdf = 0.5 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2));
                let pdf = (-0.5 * x64 * x64).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (gelu_derivative(x) as f64 - (cdf + x64 * pdf)).abs()
            })
            .fold(0.0, f64::max);
        assert!(worst <= 2e-6, "gelu' max abs error {worst:e}");
        let z: Vec<f32> = grid(-3.0, 3.0, 1000).collect();
        let mut g = vec![2.0f32; z.len()];
        zip_in_place(&mut g, &z, |g, z| g * gelu_derivative(z));
        for (g, &z) in g.iter().zip(&z) {
            assert_eq!(*g, 2.0 * gelu_derivative(z));
        }
    }

    #[test]
    fn exp_is_within_2_ulp_for_nonpositive_inputs() {
        for x in grid(-87.0, 0.0, 400_000) {
            let exact = (x as f64).exp();
            let rel = (exp_nonpositive(x) as f64 - exact).abs() / exact;
            assert!(rel <= 2.5e-7, "exp({x}) relative error {rel:e}");
        }
        // Far below: clamped to e⁻⁸⁷ (1.6e-38), which a softmax sum cannot tell from 0.
        assert!((0.0..2e-38).contains(&exp_nonpositive(-1000.0)));
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        for len in [1, 7, 8, 9, 197, 257] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 1.7)
                .collect();
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let mut got = row.clone();
            softmax_in_place(&mut got);
            for (g, &v) in got.iter().zip(&row) {
                let exact = (v as f64 - max).exp() / sum;
                assert!(
                    (*g as f64 - exact).abs() <= 1e-6,
                    "len {len}: {g} vs {exact}"
                );
            }
        }
    }

    /// Norming from a source into a destination gives each row the bits of the in-place
    /// LayerNorm, from the baseline build and the vectorised one, with and without a tail.
    #[test]
    fn layer_norm_into_a_destination_has_the_bits_of_the_in_place_one() {
        fn vectorised(src: &[f32], dst: &mut [f32], dim: usize, norm: LayerNormParams<'_>) {
            best_simd!((src: &[f32], dst: &mut [f32], dim: usize, norm: LayerNormParams<'_>) {
                layer_norm_rows(src, dst, dim, norm)
            })
        }
        for dim in [96, 13, 8, 3] {
            let gamma: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.01).collect();
            let beta: Vec<f32> = (0..dim).map(|i| i as f32 * -0.02).collect();
            for with_beta in [true, false] {
                let norm = LayerNormParams {
                    gamma: &gamma,
                    beta: with_beta.then_some(&beta[..]),
                    eps: 1e-6,
                };
                for rows in [1, 3, 4, 9] {
                    let src: Vec<f32> = (0..rows * dim)
                        .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * (1 + i % 5) as f32)
                        .collect();
                    let mut want = src.clone();
                    for row in want.chunks_exact_mut(dim) {
                        layer_norm_in_place(row, norm);
                    }
                    let mut got = vec![f32::NAN; src.len()];
                    layer_norm_rows(&src, &mut got, dim, norm);
                    assert_eq!(got, want, "baseline, {rows} rows of {dim}");
                    let mut got = vec![f32::NAN; src.len()];
                    vectorised(&src, &mut got, dim, norm);
                    let mut want_vectorised = src.clone();
                    fn one_by_one(rows: &mut [f32], dim: usize, norm: LayerNormParams<'_>) {
                        best_simd!((rows: &mut [f32], dim: usize, norm: LayerNormParams<'_>) {
                            for row in rows.chunks_exact_mut(dim) {
                                layer_norm_in_place(row, norm);
                            }
                        })
                    }
                    one_by_one(&mut want_vectorised, dim, norm);
                    assert_eq!(got, want_vectorised, "vectorised, {rows} rows of {dim}");
                    assert_eq!(got, want, "vectorised and baseline, {rows} rows of {dim}");
                }
            }
        }
    }
}
