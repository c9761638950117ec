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
