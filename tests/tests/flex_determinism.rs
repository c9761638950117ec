//! Seeded training on the default CPU backend (Flex) is bit-reproducible for any thread count
//! (`docs/results.md`): its matmul splits the work over output tiles and batch entries, never
//! over the summed dimension, and its element-wise and row-wise kernels do not split rows.
//! This checks the operations a DMPO training step is made of, at sizes where Flex does use
//! several threads, in pools of 1, 2 and 3 threads, for bitwise equality.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::attention;
use dmpo_tests::FlexBackend;

type B = Autodiff<FlexBackend>;

/// A deterministic pseudo-random tensor (no RNG state shared between pools).
fn filled<const D: usize>(
    shape: [usize; D],
    salt: u32,
    device: &burn::tensor::Device<B>,
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

/// A forward and backward through the kinds of operations a block and an exit use, returning
/// every output and gradient as raw bits.
fn step_bits() -> Vec<u32> {
    let device = Default::default();
    // Token matrices of a ViT-S-sized batch: [4, 197, 384] x [384, 1152] is 340 M MACs per
    // call, far above Flex's threshold for threading a matmul.
    let x = filled([4, 197, 384], 1, &device).require_grad();
    let w = filled([384, 1152], 2, &device).require_grad();
    let qkv = x.clone().matmul(w.clone().unsqueeze::<3>());
    let heads = |i: usize| {
        qkv.clone()
            .narrow(2, i * 384, 384)
            .reshape([4, 197, 6, 64])
            .swap_dims(1, 2)
    };
    let attended = attention(heads(0), heads(1), heads(2), None, None, Default::default());
    let h = gelu(attended.swap_dims(1, 2).reshape([4, 197, 384]));
    // A covariance pooling as the early exits do: [4, 384, 197] x [4, 197, 384].
    let cov = h.clone().swap_dims(1, 2).matmul(h.clone());
    let logits = softmax(cov.clone().mean_dim(2).reshape([4, 384]), 1);
    let loss = logits.sum() + h.powf_scalar(2.0).mean();
    let grads = loss.backward();
    let mut bits = Vec::new();
    for t in [
        x.grad(&grads).unwrap().into_data(),
        w.grad(&grads).unwrap().into_data(),
        cov.inner().into_data(),
    ] {
        bits.extend(t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()));
    }
    bits
}

#[test]
fn flex_results_do_not_depend_on_the_thread_count() {
    let in_pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(step_bits)
    };
    let one = in_pool(1);
    assert!(one.iter().any(|&b| f32::from_bits(b) != 0.0));
    for threads in [2, 3] {
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
