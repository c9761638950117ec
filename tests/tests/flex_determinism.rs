//! Seeded training on the default CPU backend (Flex) is bit-reproducible for any thread count
//! (`docs/results.md`): its matmul splits the work over output tiles and batch entries, never
//! over the summed dimension, and its element-wise and row-wise kernels do not split rows.
//! This checks the operations a DMPO training step is made of, at sizes where Flex does use
//! several threads, in pools of 1, 2 and 3 threads, for bitwise equality.

use burn::backend::Autodiff;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::module::attention;
use dmpo_tests::{FlexBackend, assert_same_bits_on_any_thread_count, filled};

type B = Autodiff<FlexBackend>;

/// A forward and backward through the kinds of operations a block and an exit use, returning
/// every output and gradient as raw bits.
fn step_bits() -> Vec<u32> {
    let device = Default::default();
    // Token matrices of a ViT-S-sized batch: [4, 197, 384] x [384, 1152] is 340 M MACs per
    // call, far above Flex's threshold for threading a matmul.
    let x = filled::<B, 3>([4, 197, 384], 1, &device).require_grad();
    let w = filled::<B, 2>([384, 1152], 2, &device).require_grad();
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
    assert_same_bits_on_any_thread_count(step_bits);
}
