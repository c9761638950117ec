//! Helpers shared by the cross-crate tests: fixture paths, the deterministic weight formula that
//! `fixtures/make_references.py` implements identically, and a tolerance check.

pub mod formula;
pub mod parity;

use std::path::PathBuf;

use burn::prelude::*;
use dmpo_import::HostTensor;

pub type TestBackend = burn::backend::NdArray;
/// The default CPU backend of the binaries (Burn's Flex), checked against the same references.
pub type FlexBackend = burn::backend::Flex;

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

/// A tensor of any backend as a host tensor.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let data = t.into_data();
    let shape = data.shape.to_vec();
    HostTensor::new(shape, data.convert::<f32>().into_vec().unwrap())
}

/// Asserts `ours` matches `reference` within `rel_tol` of the reference's largest magnitude,
/// the tolerance timm parity is judged by.
pub fn assert_close(what: &str, ours: &HostTensor, reference: &HostTensor, rel_tol: f32) {
    assert_eq!(ours.shape, reference.shape, "{what}: shape");
    let scale = reference
        .data
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-12);
    let (worst, at) = ours
        .data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0f32, 0),
            |(m, i), (j, d)| if d > m || d.is_nan() { (d, j) } else { (m, i) },
        );
    assert!(
        worst <= rel_tol * scale,
        "{what}: max |diff| {worst:e} at {at} (ours {}, reference {}) exceeds {rel_tol:e} x {scale}",
        ours.data[at],
        reference.data[at]
    );
}

/// A deterministic pseudo-random tensor in [-1, 1] from a hash of the index and `salt`: unlike
/// the backend's RNG, it is not shared with tests running beside it, nor with thread pools.
pub fn filled<B: Backend, const D: usize>(
    shape: [usize; D],
    salt: u32,
    device: &B::Device,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u32)
        .map(|i| {
            let h = (i ^ salt).wrapping_mul(2_654_435_761).rotate_left(13) ^ salt;
            (h % 20_001) as f32 / 10_000.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// Asserts that `run` gives the same bits in rayon pools of 1, 2 and 3 threads (what Flex
/// splits over threads must not change a result).
pub fn assert_same_bits_on_any_thread_count(run: impl Fn() -> Vec<u32> + Send + Sync) {
    assert_same_bits_on_thread_counts(&[2, 3], run);
}

/// Asserts that `run` gives the same bits in a rayon pool of each of `threads` as in a pool of
/// one thread.
pub fn assert_same_bits_on_thread_counts(
    threads: &[usize],
    run: impl Fn() -> Vec<u32> + Send + Sync,
) {
    let in_pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(&run)
    };
    let one = in_pool(1);
    assert!(one.iter().any(|&b| f32::from_bits(b) != 0.0));
    for &threads in threads {
        let many = in_pool(threads);
        let differing = one.iter().zip(&many).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "{threads} threads: {differing} of {} values differ from 1 thread",
            one.len()
        );
    }
}
