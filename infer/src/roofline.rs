//! What this machine's cores can do, measured with the same gemm crate and thread pool the Flex
//! backend runs on: the f32 matrix-product throughput at square sizes from cache-resident to
//! memory-sized, and the memory bandwidth of a streaming copy. Every speed figure is reported
//! as a fraction of these (docs/benchmarks.md), so "fast" means "close to the hardware" rather
//! than only "faster than another library".

use std::time::Instant;

/// One square product `C = A·B` (n × n × n).
#[derive(Debug, Clone, serde::Serialize)]
pub struct GemmPoint {
    pub size: usize,
    /// The median of the timed products, in GFLOP/s (2·n³ flops each).
    pub gflops: f64,
}

/// The machine's measured ceilings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Roofline {
    /// Threads of the rayon pool the products ran on.
    pub threads: usize,
    /// Whether gemm picks its AVX-512 microkernels here (the CPU has AVX-512F).
    pub avx512: bool,
    pub gemm: Vec<GemmPoint>,
    /// The best of `gemm`: the compute ceiling a forward pass is compared with.
    pub peak_gflops: f64,
    /// A streaming copy of a buffer far larger than the caches, in GB/s (bytes read + written).
    pub bandwidth_gb_s: f64,
}

/// Measures the ceilings: each gemm size is timed until `seconds` have passed (at least three
/// products, median taken), the copy likewise.
pub fn measure_roofline(sizes: &[usize], seconds: f64) -> Roofline {
    let gemm: Vec<GemmPoint> = sizes
        .iter()
        .map(|&n| GemmPoint {
            size: n,
            gflops: gemm_gflops(n, seconds),
        })
        .collect();
    let peak_gflops = gemm.iter().map(|p| p.gflops).fold(0.0, f64::max);
    Roofline {
        threads: rayon::current_num_threads(),
        avx512: avx512_in_use(),
        gemm,
        peak_gflops,
        bandwidth_gb_s: copy_bandwidth(seconds),
    }
}

/// Whether this CPU has AVX-512F, so that gemm (built with its `x86-v4` kernels) and our own
/// element-wise kernels run their AVX-512 versions.
pub fn avx512_in_use() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Times `f` repeatedly (one untimed warm-up) until `seconds` have passed and at least three
/// runs are in; the median duration.
fn time_median(seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut runs = Vec::new();
    while runs.len() < 3 || (start.elapsed().as_secs_f64() < seconds && runs.len() < 1000) {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    crate::bench::median(&runs)
}

fn gemm_gflops(n: usize, seconds: f64) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.125).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.25).collect();
    let mut c = vec![0.0f32; n * n];
    let s = time_median(seconds, || {
        // SAFETY: a, b and c are n × n row-major buffers that live for the call; strides match.
        unsafe {
            gemm::gemm(
                n,
                n,
                n,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                n as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            )
        }
        std::hint::black_box(&c);
    });
    2.0 * (n as f64).powi(3) / s / 1e9
}

fn copy_bandwidth(seconds: f64) -> f64 {
    use rayon::prelude::*;
    // 256 MiB each way: far past any last-level cache.
    const LEN: usize = 64 << 20;
    let src = vec![1.0f32; LEN];
    let mut dst = vec![0.0f32; LEN];
    let chunk = LEN / (rayon::current_num_threads() * 4).max(1);
    let s = time_median(seconds, || {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    });
    (2 * LEN * std::mem::size_of::<f32>()) as f64 / s / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceilings_are_positive_and_the_peak_is_the_best_size() {
        let r = measure_roofline(&[32, 64], 0.0);
        assert_eq!(r.gemm.len(), 2);
        assert!(
            r.gemm
                .iter()
                .all(|p| p.gflops > 0.0 && p.gflops.is_finite())
        );
        assert_eq!(
            r.peak_gflops,
            r.gemm.iter().map(|p| p.gflops).fold(0.0, f64::max)
        );
        assert!(r.bandwidth_gb_s > 0.0 && r.bandwidth_gb_s.is_finite());
    }
}
