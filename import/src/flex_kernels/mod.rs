//! Fused CPU kernels for Burn's Flex backend, installed into the model crate's kernel registry
//! ([`dmpo_model::kernels`]) so the generic ViT uses them on Flex (inference and evaluation;
//! training runs on `Autodiff<Flex>`, which keeps Burn's composition and its gradients).
//!
//! What each buys is measured in docs/benchmarks.md. `DMPO_KERNELS=composed` in the environment
//! leaves them out (the plain Burn composition everywhere), to compare or to rule them out.

mod attention;
mod linear;
pub mod math;

use burn::backend::Flex;
use dmpo_model::kernels::{self, Kernels};

/// Installs the kernels for the process, unless `DMPO_KERNELS=composed`. Idempotent.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("DMPO_KERNELS").is_ok_and(|v| v == "composed") {
            tracing::info!("DMPO_KERNELS=composed: Flex runs Burn's composed ops");
            return;
        }
        kernels::install::<Flex>(Kernels {
            linear: Some(linear::linear),
            qkv_attention: Some(attention::qkv_attention),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use dmpo_model::kernels::Activation;

    type B = Flex;

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    fn composed_linear(
        x: Tensor<B, 3>,
        w: &Tensor<B, 2>,
        b: Option<&Tensor<B, 1>>,
        act: Activation,
    ) -> Tensor<B, 3> {
        let y = burn::tensor::module::linear(x, w.clone(), b.cloned());
        match act {
            Activation::None => y,
            Activation::Gelu => burn::tensor::activation::gelu(y),
        }
    }

    fn fused_linear(
        x: &Tensor<B, 3>,
        w: &Tensor<B, 2>,
        b: Option<&Tensor<B, 1>>,
        act: Activation,
    ) -> Tensor<B, 3> {
        let prim = |t: Tensor<B, 2>| t.into_primitive().tensor();
        let out = linear::linear(
            &x.clone().into_primitive().tensor(),
            &prim(w.clone()),
            b.map(|b| b.clone().into_primitive().tensor()).as_ref(),
            act,
        )
        .expect("f32 tensors are accepted");
        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(out))
    }

    #[test]
    fn fused_linear_equals_burns_composition() {
        // One row and many (the row split over threads), with and without bias and GELU, a
        // weight stored transposed (as imported from PyTorch), odd sizes.
        for (rows, k, m) in [(1, 5, 3), (197, 64, 96), (16 * 50, 48, 130)] {
            let x = random([1, rows, k]);
            let w = random([k, m]);
            let w_transposed = random([m, k]).transpose();
            let b = random([m]);
            for act in [Activation::None, Activation::Gelu] {
                for bias in [None, Some(&b)] {
                    for w in [&w, &w_transposed] {
                        let diff = max_abs_diff(
                            fused_linear(&x, w, bias, act),
                            composed_linear(x.clone(), w, bias, act),
                        );
                        assert!(diff <= 1e-4, "{rows}x{k}x{m} {act:?}: {diff}");
                    }
                }
            }
        }
    }

    #[test]
    fn fused_attention_equals_burns_attention_op() {
        for (b, n, d, heads) in [(1, 1, 8, 2), (2, 17, 48, 3), (3, 65, 192, 3)] {
            let qkv = random([b, n, 3 * d]);
            let fused = attention::qkv_attention(&qkv.clone().into_primitive().tensor(), heads)
                .expect("f32 accepted");
            let fused: Tensor<B, 3> =
                Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(fused));
            let composed = kernels::composed_qkv_attention(qkv, heads);
            let diff = max_abs_diff(fused, composed);
            assert!(diff <= 1e-5, "{b}x{n}x{d}/{heads}: {diff}");
        }
    }

    #[test]
    fn kernels_decline_what_they_do_not_handle() {
        let x = random([2, 3, 4]).into_primitive().tensor();
        let w = random([5, 6]).into_primitive().tensor();
        assert!(linear::linear(&x, &w, None, Activation::None).is_none());
        assert!(attention::qkv_attention(&x, 1).is_none()); // 4 is not 3·D
        let qkv = random([1, 2, 12]).into_primitive().tensor();
        assert!(attention::qkv_attention(&qkv, 3).is_none()); // D = 4 not divisible by 3 heads
        let half = random([1, 2, 12])
            .cast(burn::tensor::DType::F16)
            .into_primitive()
            .tensor();
        assert!(attention::qkv_attention(&half, 2).is_none());
    }
}
