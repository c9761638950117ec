//! Fused CPU kernels for Burn's Flex backend, installed into the model crate's kernel registry
//! ([`dmpo_model::kernels`]) so the generic ViT uses them on Flex and, with their own backward,
//! on `Autodiff<Flex>` (training).
//!
//! Training also gets LayerNorm with its own backward (Burn's autodiff composes it from about
//! ten ops). Inference also gets the covariance heads' Newton–Schulz iterations as one kernel,
//! and each head's whole pooling (LayerNorm to upper triangle) as one task per image.
//! What each buys is measured in docs/benchmarks.md. `DMPO_KERNELS` in the environment chooses:
//! `composed` (none: Burn's composition everywhere), `linear` or `attention` (that trunk kernel
//! only, to compare the two); unset or anything else, all of them.

mod attention;
mod autodiff;
mod bypass;
mod covariance_pool;
mod embed_tokens;
mod layer_norm;
mod linear;
pub mod math;
mod newton_schulz;
mod patchify;
mod product;
mod small_product;

use burn::backend::Flex;
use burn_flex::FlexTensor;
use dmpo_model::kernels::{self, Kernels};

/// An optional parameter's `f32` values: `Some(None)` when the parameter is absent, `None` when
/// it cannot be read as `f32` (the kernel then declines).
fn optional_slice(t: &Option<FlexTensor>) -> Option<Option<&[f32]>> {
    match t {
        Some(t) => t.as_slice::<f32>().map(Some),
        None => Some(None),
    }
}

/// Whether [`install`] put any kernel in place for Flex.
pub fn installed() -> bool {
    kernels::installed::<Flex>().is_some()
}

/// Installs the kernels for the process, as `DMPO_KERNELS` says (all by default). Idempotent.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let choice = std::env::var("DMPO_KERNELS").unwrap_or_default();
        let (linear, attention) = match choice.as_str() {
            "composed" => (false, false),
            "linear" => (true, false),
            "attention" => (false, true),
            _ => (true, true),
        };
        if !(linear || attention) {
            tracing::info!("DMPO_KERNELS=composed: Flex runs Burn's composed ops");
            return;
        }
        // The patch cut and the heads' kernels come with the full set only: the per-kernel
        // choices compare the trunk's two.
        let all = linear && attention;
        if !all {
            tracing::info!(
                "DMPO_KERNELS={choice}: Flex's fused linear {linear}, attention {attention}"
            );
        }
        kernels::install::<Flex>(Kernels {
            patchify: all.then_some(patchify::patchify as kernels::PatchifyKernel<Flex>),
            embed_tokens: all
                .then_some(embed_tokens::embed_tokens as kernels::EmbedTokensKernel<Flex>),
            linear: linear.then_some(linear::linear as kernels::LinearKernel<Flex>),
            qkv_attention: attention
                .then_some(attention::qkv_attention as kernels::QkvAttentionKernel<Flex>),
            newton_schulz: all
                .then_some(newton_schulz::fused_newton_schulz as kernels::NewtonSchulzKernel<Flex>),
            covariance_pool: all
                .then_some(covariance_pool::covariance_pool as kernels::CovariancePoolKernel<Flex>),
            bypass: all.then_some(bypass::bypass as kernels::BypassKernel<Flex>),
            // Flex's own LayerNorm is fused already; Burn's autodiff composes it.
            layer_norm: None,
        });
        type AD = burn_autodiff::Autodiff<Flex>;
        kernels::install::<AD>(Kernels {
            patchify: all.then_some(autodiff::patchify as kernels::PatchifyKernel<AD>),
            // Burn's ops (the position embedding may be trained).
            embed_tokens: None,
            linear: linear.then_some(autodiff::linear as kernels::LinearKernel<AD>),
            qkv_attention: attention
                .then_some(autodiff::qkv_attention as kernels::QkvAttentionKernel<AD>),
            newton_schulz: None,
            covariance_pool: None,
            bypass: None,
            layer_norm: all.then_some(autodiff::layer_norm as kernels::LayerNormKernel<AD>),
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
        activate(burn::tensor::module::linear(x, w.clone(), b.cloned()), act)
    }

    /// `act(y)` from Burn's own activation ops (on any backend, autodiff included).
    fn activate<BB: burn::prelude::Backend>(y: Tensor<BB, 3>, act: Activation) -> Tensor<BB, 3> {
        match act {
            Activation::None => y,
            Activation::Gelu => burn::tensor::activation::gelu(y),
            Activation::Relu => burn::tensor::activation::relu(y),
        }
    }

    const ACTIVATIONS: [Activation; 3] = [Activation::None, Activation::Gelu, Activation::Relu];

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
        // One row and many (row blocks; one threaded gemm for the last, large weight), with
        // and without bias and GELU, a weight stored transposed (as imported from PyTorch),
        // odd sizes.
        for (rows, k, m) in [
            (0, 5, 3),
            (1, 5, 3),
            (197, 64, 96),
            (16 * 50, 48, 130),
            (300, 512, 520),
        ] {
            let x = random([1, rows, k]);
            let w = random([k, m]);
            let w_transposed = random([m, k]).transpose();
            let b = random([m]);
            for act in ACTIVATIONS {
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
    fn fused_newton_schulz_equals_the_composition() {
        // Symmetric PSD matrices with trace 1 (as the covariance head feeds it), odd sizes too.
        for (b, d, iterations) in [(1, 1, 1), (3, 5, 2), (4, 32, 5), (2, 17, 7)] {
            let x = random([b, d + 3, d]);
            let sigma = x.clone().swap_dims(1, 2).matmul(x);
            let eye = Tensor::<B, 2>::eye(d, &Default::default()).unsqueeze::<3>();
            let trace = (sigma.clone() * eye).sum_dim(2).sum_dim(1);
            let a = sigma / trace;
            let fused = newton_schulz::fused_newton_schulz(
                &a.clone().into_primitive().tensor(),
                iterations,
            )
            .expect("f32 accepted");
            let fused: Tensor<B, 3> =
                Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(fused));
            let composed = dmpo_model::dmpo::newton_schulz_sqrt(a, iterations);
            let diff = max_abs_diff(fused, composed);
            assert!(diff <= 1e-5, "{b}x{d}x{d}, {iterations} iterations: {diff}");
        }
    }

    #[test]
    fn fused_covariance_pool_equals_the_heads_composition() {
        use burn::module::Param;
        use dmpo_model::dmpo::{CovarianceHead, upper_triangle};
        let device = Default::default();
        // With and without a class token, the demo's size, a LayerNorm with scale and shift.
        for (b, t, dim, r, prefix, iterations) in [
            (3, 17, 24, 8, 1, 5),
            (2, 9, 12, 5, 0, 3),
            (4, 50, 96, 32, 1, 5),
        ] {
            let mut head =
                CovarianceHead::<B>::new(dim, r, 10, iterations, prefix, false, 1e-5, &device);
            head.norm.gamma = Param::from_tensor(random([dim]) * 0.5 + 1.0);
            head.norm.beta = Some(Param::from_tensor(random([dim]) * 0.1));
            let tokens = random([b, t, dim]) * 2.0 + 0.5;
            let composed = upper_triangle(head.pooled_covariance(tokens.clone()));
            let input = dmpo_model::kernels::CovariancePool {
                tokens: tokens.into_primitive().tensor(),
                prefix,
                norm_gamma: head.norm.gamma.val().into_primitive().tensor(),
                norm_beta: head
                    .norm
                    .beta
                    .as_ref()
                    .map(|b| b.val().into_primitive().tensor()),
                norm_eps: CovarianceHead::<B>::NORM_EPS,
                reduce_weight: head.reduce.weight.val().into_primitive().tensor(),
                iterations,
                eps: head.eps,
            };
            let fused: Tensor<B, 2> = Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(
                covariance_pool::covariance_pool(&input).expect("f32 accepted"),
            ));
            assert_eq!(fused.dims(), [b, r * (r + 1) / 2]);
            let scale = composed.clone().abs().max().into_scalar();
            let diff = max_abs_diff(fused, composed);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{b}x{t}x{dim} → {r}: {diff} (scale {scale})"
            );
        }
    }

    #[test]
    fn fused_patchify_is_the_composed_reshape_and_permute_bit_for_bit() {
        // Every specialised side (4, 8, 14, 16) and one read at run time (6).
        for (b, c, h, w, p) in [
            (2, 3, 28, 28, 4),
            (1, 1, 8, 12, 4),
            (3, 3, 32, 32, 16),
            (2, 3, 16, 24, 8),
            (1, 3, 28, 42, 14),
            (2, 2, 12, 18, 6),
        ] {
            let images = random([b, c, h, w]);
            let fused = patchify::patchify(&images.clone().into_primitive().tensor(), p)
                .expect("f32 accepted");
            let fused: Tensor<B, 3> =
                Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(fused));
            let composed = kernels::composed_patchify(images, p);
            fused.to_data().assert_eq(&composed.to_data(), true);
        }
        // Sides that are not multiples of the patch: declined, composed instead.
        let odd = random([1, 3, 10, 8]).into_primitive().tensor();
        assert!(patchify::patchify(&odd, 4).is_none());
    }

    /// Under autodiff, untracked images (a frozen patch embedding's input) take the kernel and
    /// tracked ones the composition, whose gradient Burn derives.
    #[test]
    fn fused_embed_tokens_are_the_composed_concatenation_and_sum_bit_for_bit() {
        let float = |t: &Tensor<B, 3>| t.clone().into_primitive().tensor();
        let (b, n, d) = (3, 7, 12);
        // No prefix, a class token, class + 4 registers; the position embedding over every
        // token, or over the patches alone (timm's `no_embed_class`).
        for prefix_rows in [vec![], vec![1], vec![1, 4]] {
            for pos_on_prefix in [true, false] {
                let patches = random([b, n, d]);
                let prefix: Vec<Tensor<B, 3>> =
                    prefix_rows.iter().map(|&r| random([1, r, d])).collect();
                let p: usize = prefix_rows.iter().sum();
                let pos = random([1, if pos_on_prefix { p + n } else { n }, d]);
                let input = kernels::TokensInput {
                    patches: float(&patches),
                    prefix: prefix.iter().map(float).collect(),
                    pos_embed: float(&pos),
                    pos_on_prefix,
                };
                let fused: Tensor<B, 3> =
                    Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(
                        embed_tokens::embed_tokens(&input).expect("f32 accepted"),
                    ));
                let composed = kernels::composed_embed_tokens(patches, &prefix, pos, pos_on_prefix);
                fused.to_data().assert_eq(&composed.to_data(), true);
            }
        }
        // A position embedding of the wrong length: declined, composed instead.
        let input = kernels::TokensInput {
            patches: float(&random([1, 4, 8])),
            prefix: vec![float(&random([1, 1, 8]))],
            pos_embed: float(&random([1, 4, 8])),
            pos_on_prefix: true,
        };
        assert!(embed_tokens::embed_tokens(&input).is_none());
    }

    #[test]
    fn autodiff_patchify_takes_untracked_images_only() {
        type AD = burn_autodiff::Autodiff<B>;
        let images = Tensor::<AD, 4>::from_inner(random([2, 3, 8, 8]));
        let out = autodiff::patchify(&images.clone().into_primitive().tensor(), 4)
            .expect("untracked images are taken");
        let out: Tensor<AD, 3> = Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(out));
        out.inner().to_data().assert_eq(
            &kernels::composed_patchify(images.inner(), 4).to_data(),
            true,
        );
        let tracked = Tensor::<AD, 4>::from_inner(random([2, 3, 8, 8])).require_grad();
        assert!(autodiff::patchify(&tracked.into_primitive().tensor(), 4).is_none());
    }

    #[test]
    fn fused_bypass_equals_the_modules_composition() {
        use burn::module::Param;
        use dmpo_model::dmpo::Bypass;
        let device = Default::default();
        // The demo's size (a bottleneck of 8 and a row count that is no multiple of a task's
        // 32 rows), a wide one, scale 1 (skipped) and not.
        for (b, t, dim, r, scale) in [
            (4, 50, 96, 8, 1.0),
            (2, 9, 40, 24, 0.5),
            (1, 197, 64, 5, 2.0),
        ] {
            let mut module = Bypass::<B>::new(dim, r, scale, &device);
            module.norm.gamma = Param::from_tensor(random([dim]) * 0.5 + 1.0);
            module.norm.beta = Some(Param::from_tensor(random([dim]) * 0.1));
            module.up.weight = Param::from_tensor(random([r, dim]) * 0.2);
            module.up.bias = Some(Param::from_tensor(random([dim]) * 0.1));
            let h = random([b, t, dim]) * 2.0 + 0.5;
            let composed = module.composed_forward(h.clone());
            let prim = |t: Tensor<B, 2>| t.into_primitive().tensor();
            let input = dmpo_model::kernels::BypassInput {
                tokens: h.into_primitive().tensor(),
                norm_gamma: module.norm.gamma.val().into_primitive().tensor(),
                norm_beta: module
                    .norm
                    .beta
                    .as_ref()
                    .map(|b| b.val().into_primitive().tensor()),
                norm_eps: Bypass::<B>::NORM_EPS,
                down_weight: prim(module.down.weight.val()),
                down_bias: module
                    .down
                    .bias
                    .as_ref()
                    .map(|b| b.val().into_primitive().tensor()),
                up_weight: prim(module.up.weight.val()),
                up_bias: module
                    .up
                    .bias
                    .as_ref()
                    .map(|b| b.val().into_primitive().tensor()),
                scale,
            };
            let fused: Tensor<B, 3> = Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(
                bypass::bypass(&input).expect("f32 accepted"),
            ));
            assert_eq!(fused.dims(), [b, t, dim]);
            let diff = max_abs_diff(fused, composed);
            assert!(diff <= 2e-5, "{b}x{t}x{dim} → {r}: {diff}");
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

    /// Forward and every gradient (x, weight, bias; frozen weight too) of the autodiff kernel
    /// against Burn's autodiff of the composition.
    #[test]
    fn fused_linear_under_autodiff_has_the_composed_gradients() {
        type AB = burn_autodiff::Autodiff<B>;
        let leaf = |t: Tensor<B, 3>, grad: bool| {
            let t = Tensor::<AB, 3>::from_inner(t);
            if grad { t.require_grad() } else { t }
        };
        let (x0, r) = (random([2, 33, 24]), random([2, 33, 40]));
        let (w0, b0) = (random([24, 40]), random([40]));
        for act in ACTIVATIONS {
            for train_weight in [true, false] {
                let run = |fused: bool| {
                    let x = leaf(x0.clone(), true);
                    let w = Tensor::<AB, 2>::from_inner(w0.clone());
                    let w = if train_weight { w.require_grad() } else { w };
                    let b = Tensor::<AB, 1>::from_inner(b0.clone()).require_grad();
                    let y = if fused {
                        let out = autodiff::linear(
                            &x.clone().into_primitive().tensor(),
                            &w.clone().into_primitive().tensor(),
                            Some(&b.clone().into_primitive().tensor()),
                            act,
                        )
                        .expect("f32 accepted");
                        Tensor::<AB, 3>::from_primitive(burn::tensor::TensorPrimitive::Float(out))
                    } else {
                        let y = burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()));
                        activate(y, act)
                    };
                    let grads = (y.clone() * leaf(r.clone(), false)).sum().backward();
                    let gw = w.grad(&grads);
                    assert_eq!(gw.is_some(), train_weight);
                    (
                        y.inner(),
                        x.grad(&grads).unwrap(),
                        gw,
                        b.grad(&grads).unwrap(),
                    )
                };
                let (y, gx, gw, gb) = run(true);
                let (y_ref, gx_ref, gw_ref, gb_ref) = run(false);
                let what = format!("{act:?}, weight trained: {train_weight}");
                assert!(max_abs_diff(y, y_ref) <= 1e-5, "output, {what}");
                assert!(max_abs_diff(gx, gx_ref) <= 1e-4, "x grad, {what}");
                assert!(
                    max_abs_diff(gb.unsqueeze::<3>(), gb_ref.unsqueeze()) <= 1e-4,
                    "bias grad, {what}"
                );
                if let (Some(gw), Some(gw_ref)) = (gw, gw_ref) {
                    assert!(
                        max_abs_diff(gw.unsqueeze::<3>(), gw_ref.unsqueeze()) <= 1e-4,
                        "weight grad, {what}"
                    );
                }
            }
        }
    }

    /// The attention kernel's gradient against Burn's autodiff of the composition.
    #[test]
    fn fused_attention_under_autodiff_has_the_composed_gradient() {
        type AB = burn_autodiff::Autodiff<B>;
        for (b, n, d, heads) in [(1, 1, 8, 2), (2, 17, 48, 3), (2, 50, 96, 3)] {
            let (qkv0, r) = (random([b, n, 3 * d]), random([b, n, d]));
            let run = |fused: bool| {
                let qkv = Tensor::<AB, 3>::from_inner(qkv0.clone()).require_grad();
                let out = if fused {
                    let out =
                        autodiff::qkv_attention(&qkv.clone().into_primitive().tensor(), heads)
                            .expect("f32 accepted");
                    Tensor::<AB, 3>::from_primitive(burn::tensor::TensorPrimitive::Float(out))
                } else {
                    kernels::composed_qkv_attention(qkv.clone(), heads)
                };
                let grads = (out.clone() * Tensor::<AB, 3>::from_inner(r.clone()))
                    .sum()
                    .backward();
                (out.inner(), qkv.grad(&grads).unwrap())
            };
            let ((out, grad), (out_ref, grad_ref)) = (run(true), run(false));
            assert!(
                max_abs_diff(out, out_ref) <= 1e-5,
                "{b}x{n}x{d}/{heads}: output"
            );
            let diff = max_abs_diff(grad, grad_ref);
            assert!(diff <= 1e-4, "{b}x{n}x{d}/{heads}: gradient {diff}");
        }
    }

    /// The LayerNorm kernel's output and gradients (input, γ, β; with and without β, with the
    /// parameters trained or frozen; odd widths, one row and many blocks of rows) against Burn's
    /// autodiff of its composed LayerNorm.
    #[test]
    fn layer_norm_under_autodiff_has_the_composed_gradients() {
        type AB = burn_autodiff::Autodiff<B>;
        let eps = 1e-6;
        for (rows, dim) in [(1, 5), (3 * 64 + 7, 24), (130, 97)] {
            let (x0, r) = (random([1, rows, dim]), random([1, rows, dim]));
            let (g0, b0) = (random([dim]), random([dim]));
            for (with_beta, train_params) in [(true, true), (false, true), (true, false)] {
                let run = |fused: bool| {
                    let x = Tensor::<AB, 3>::from_inner(x0.clone()).require_grad();
                    let param = |t: &Tensor<B, 1>| {
                        let t = Tensor::<AB, 1>::from_inner(t.clone());
                        if train_params { t.require_grad() } else { t }
                    };
                    let (gamma, beta) = (param(&g0), with_beta.then(|| param(&b0)));
                    let prim = |t: &Tensor<AB, 1>| t.clone().into_primitive().tensor();
                    let y: Tensor<AB, 3> = if fused {
                        let out = autodiff::layer_norm(
                            &x.clone().into_primitive().tensor(),
                            &prim(&gamma),
                            beta.as_ref().map(prim).as_ref(),
                            eps,
                        )
                        .expect("f32 accepted");
                        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(out))
                    } else {
                        use burn::tensor::ops::ModuleOps;
                        Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(
                            AB::layer_norm(
                                x.clone().into_primitive().tensor(),
                                prim(&gamma),
                                beta.as_ref().map(prim),
                                eps,
                            ),
                        ))
                    };
                    let grads = (y.clone() * Tensor::<AB, 3>::from_inner(r.clone()))
                        .sum()
                        .backward();
                    let grad1 = |t: &Tensor<AB, 1>| t.grad(&grads).map(|g| g.unsqueeze::<3>());
                    (
                        y.inner(),
                        x.grad(&grads).unwrap(),
                        grad1(&gamma),
                        beta.as_ref().and_then(grad1),
                    )
                };
                let (y, gx, gg, gb) = run(true);
                let (y_ref, gx_ref, gg_ref, gb_ref) = run(false);
                let what = format!("{rows}x{dim}, beta {with_beta}, trained {train_params}");
                assert!(max_abs_diff(y, y_ref) <= 1e-5, "output, {what}");
                let diff = max_abs_diff(gx, gx_ref);
                assert!(diff <= 1e-4, "x grad {diff}, {what}");
                assert_eq!(gg.is_some(), train_params, "{what}");
                assert_eq!(gb.is_some(), train_params && with_beta, "{what}");
                for (g, g_ref) in [(gg, gg_ref), (gb, gb_ref)] {
                    if let (Some(g), Some(g_ref)) = (g, g_ref) {
                        // Sums over up to 199 rows.
                        let diff = max_abs_diff(g, g_ref);
                        assert!(diff <= 1e-3, "parameter grad {diff}, {what}");
                    }
                }
            }
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
