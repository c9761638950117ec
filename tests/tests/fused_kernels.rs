//! The ViT on Flex with dmpo-import's fused kernels installed (what the binaries run) against
//! timm, number for number, and seeded training through them independent of the thread count.
//! A file of its own: installing kernels is process-wide, and the other files check the
//! composed path.

use burn::module::Param;
use burn::prelude::*;
use dmpo_model::kernels;
use dmpo_tests::parity::{check_pico, check_timm_reference};
use dmpo_tests::{
    FlexBackend, assert_same_bits_on_any_thread_count, assert_same_bits_on_thread_counts, filled,
};

fn install() {
    dmpo_infer::flex_kernels::install();
    assert!(
        kernels::installed::<FlexBackend>().is_some(),
        "DMPO_KERNELS=composed is set: these tests need the fused kernels"
    );
}

#[test]
fn pico_cls_and_gap_match_timm_with_fused_kernels() {
    install();
    check_pico::<FlexBackend>("vit_pico_cls.safetensors", "vit_pico_cls.io.safetensors");
    check_pico::<FlexBackend>("vit_pico_gap.safetensors", "vit_pico_gap.io.safetensors");
}

/// ViT-S/16 at 224: 197 tokens, 6 heads, the row split of the linear kernel over threads.
#[test]
fn vit_small_patch16_224_matches_timm_with_fused_kernels() {
    install();
    check_timm_reference::<FlexBackend>("vit_small_patch16_224");
}

/// DINOv2 with registers: LayerScale, 4 register tokens.
#[test]
fn dinov2_with_registers_matches_timm_with_fused_kernels() {
    install();
    check_timm_reference::<FlexBackend>("dinov2_reg4_tiny");
}

type AB = burn::backend::Autodiff<FlexBackend>;

/// Values from a hash of the index, not the backend's RNG, which other tests share.
fn values<const D: usize>(shape: [usize; D], salt: u32) -> Tensor<AB, D> {
    filled(shape, salt, &Default::default()) * 0.5
}

fn set(linear: &mut burn::nn::Linear<AB>, salt: u32) {
    let [k, m] = linear.weight.dims();
    linear.weight = Param::from_tensor(values([k, m], salt));
    linear.bias = Some(Param::from_tensor(values([m], salt + 1)));
}

/// Every value of `tensors`, as bits, one after the other.
fn bits<const N: usize>(tensors: [TensorData; N]) -> Vec<u32> {
    tensors
        .iter()
        .flat_map(|t| t.to_vec::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

/// Seeded training stays bit-reproducible for any thread count with the kernels (as it is
/// with Burn's composition, `flex_determinism.rs`): a LayerNorm (γ and β trained: their
/// gradients are sums over rows), an attention and an MLP forward and backward at ViT-S size,
/// in pools of 1, 2 and 3 threads.
#[test]
fn fused_training_does_not_depend_on_the_thread_count() {
    use dmpo_model::vit::{Attention, Mlp};

    install();
    assert!(kernels::installed::<AB>().is_some());
    let step_bits = || {
        let device = Default::default();
        let mut attention = Attention::<AB>::new(384, 6, true, &device);
        let mut mlp = Mlp::<AB>::new(384, 1536, &device);
        for (i, linear) in [
            &mut attention.qkv,
            &mut attention.proj,
            &mut mlp.fc1,
            &mut mlp.fc2,
        ]
        .into_iter()
        .enumerate()
        {
            set(linear, 10 * i as u32 + 2);
        }
        let mut norm = burn::nn::LayerNormConfig::new(384).init::<AB>(&device);
        norm.gamma = Param::from_tensor(values([384], 50) + 1.0);
        norm.beta = Some(Param::from_tensor(values([384], 51)));
        let x = values([4, 197, 384], 1).require_grad();
        let normed = kernels::layer_norm(&norm, 1e-6, x.clone());
        let out = mlp.forward(attention.forward(normed));
        let grads = out.clone().powf_scalar(2.0).mean().backward();
        bits([
            out.inner().into_data(),
            x.grad(&grads).unwrap().into_data(),
            attention.qkv.weight.grad(&grads).unwrap().into_data(),
            mlp.fc1.weight.grad(&grads).unwrap().into_data(),
            norm.gamma.grad(&grads).unwrap().into_data(),
            norm.beta
                .as_ref()
                .unwrap()
                .grad(&grads)
                .unwrap()
                .into_data(),
        ])
    };
    assert_same_bits_on_any_thread_count(step_bits);
}

/// A large weight's product over a ViT-B/16 batch of rows (3,200 here, from 3,072 on) is cut
/// into row blocks, each one gemm, and each block's gemm is threaded itself when there are more
/// threads than blocks (12 threads here): an MLP at ViT-S width, forward and backward, gives
/// the same bits as on one thread either way.
#[test]
fn large_products_in_row_blocks_do_not_depend_on_the_thread_count() {
    use dmpo_model::vit::Mlp;

    install();
    let step_bits = || {
        let device = Default::default();
        let mut mlp = Mlp::<AB>::new(384, 1536, &device);
        set(&mut mlp.fc1, 60);
        set(&mut mlp.fc2, 70);
        let x = values([16, 200, 384], 3).require_grad();
        let out = mlp.forward(x.clone());
        let grads = out.clone().powf_scalar(2.0).mean().backward();
        bits([
            out.inner().into_data(),
            x.grad(&grads).unwrap().into_data(),
            mlp.fc1.weight.grad(&grads).unwrap().into_data(),
        ])
    };
    assert_same_bits_on_thread_counts(&[2, 3, 12], step_bits);
}
