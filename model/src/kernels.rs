//! Fused kernels a backend crate may install for one backend type.
//!
//! The model crate is generic over `B: Backend` and names no backend, yet on a CPU the ViT
//! forward spends a third of its time outside matrix products: the copies that split `qkv`
//! into heads and merge them back, the bias add, the GELU pass. A crate that *does* name a
//! backend (here `dmpo-infer`, for Flex) can install faster, fused versions of seven building
//! blocks with [`install`]; [`patchify`], [`embed_tokens`], [`linear`], [`qkv_attention`], [`matrix_sqrt`],
//! [`covariance_features`], [`bypass`] and [`layer_norm`] use them
//! when the tensors' backend has them installed and the kernel accepts the input, and fall back
//! to the plain Burn composition otherwise. So every backend gives the same results (to
//! rounding) and any Burn app keeps working with no setup. An autodiff backend is a type of its
//! own: it takes the composition, whose gradients Burn derives, unless kernels with their own
//! backward were installed for it (as `dmpo-infer` does for `Autodiff<Flex>`).

use std::any::{Any, TypeId};
use std::sync::RwLock;

use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::activation::{gelu, relu};
use burn::tensor::module::attention;

/// A backend's float tensor, as the kernels take and give it.
pub type FloatPrimitive<B> = burn::tensor::ops::FloatTensor<B>;

/// What a fused linear layer applies to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    /// Exact (erf) GELU, as timm's `Mlp`.
    Gelu,
    /// max(0, ·), as AdaptFormer's adapter.
    Relu,
}

/// `act(x·W + b)` for `x: [.., K]`, `W: [K, M]` (Burn's layout), `b: [M]`. `None`: declined
/// (a dtype or layout the kernel does not handle); the caller composes it instead.
pub type LinearKernel<B> = fn(
    &FloatPrimitive<B>,
    &FloatPrimitive<B>,
    Option<&FloatPrimitive<B>>,
    Activation,
) -> Option<FloatPrimitive<B>>;

/// Multi-head self-attention straight from one fused projection: `qkv: [B, N, 3·D]` (columns
/// q, k, v, each split into `heads` heads of `D / heads`, as timm) → `[B, N, D]` with the heads
/// merged, softmax(q·kᵀ/√d)·v per head. `None`: declined.
pub type QkvAttentionKernel<B> = fn(&FloatPrimitive<B>, usize) -> Option<FloatPrimitive<B>>;

/// The covariance heads' Newton–Schulz square root, `[B, d, d]` → `[B, d, d]` after the given
/// number of iterations ([`crate::dmpo::newton_schulz_sqrt`]). `None`: declined.
pub type NewtonSchulzKernel<B> = fn(&FloatPrimitive<B>, usize) -> Option<FloatPrimitive<B>>;

/// A covariance head's pooling, whole ([`crate::dmpo::CovarianceHead`]): the patch tokens of
/// `tokens: [B, T, D]` (after `prefix` class/register tokens) layer-normed, reduced to `d'`,
/// their covariance, its Newton–Schulz square root (`iterations`, trace-normalised with `eps`
/// and rescaled), and the upper triangle, `[B, d'(d'+1)/2]`. `None`: declined.
pub type CovariancePoolKernel<B> = fn(&CovariancePool<B>) -> Option<FloatPrimitive<B>>;

/// Images `[B, C, H, W]` cut into non-overlapping `patch × patch` patches, `[B, (H/P)·(W/P),
/// C·P·P]`: patches in row-major order, each flattened in `(c, y, x)` order ([`patchify`]).
/// `None`: declined.
pub type PatchifyKernel<B> = fn(&FloatPrimitive<B>, usize) -> Option<FloatPrimitive<B>>;

/// The tokens entering a ViT's first block ([`embed_tokens`]): the prefix tokens (class,
/// registers) before each image's patch tokens, with the position embedding added. `None`:
/// declined.
pub type EmbedTokensKernel<B> = fn(&TokensInput<B>) -> Option<FloatPrimitive<B>>;

/// A bypass module whole ([`crate::dmpo::Bypass`]): `h + s · Up(GELU(Down(LN(h))))` for
/// `tokens: [B, T, D]` → `[B, T, D]`. `None`: declined.
pub type BypassKernel<B> = fn(&BypassInput<B>) -> Option<FloatPrimitive<B>>;

/// LayerNorm over the last dimension, `(x − μ) / √(σ² + ε) · γ + β`, for `x: [.., D]`,
/// `γ, β: [D]`. `None`: declined.
pub type LayerNormKernel<B> = fn(
    &FloatPrimitive<B>,
    &FloatPrimitive<B>,
    Option<&FloatPrimitive<B>>,
    f64,
) -> Option<FloatPrimitive<B>>;

/// What [`BypassKernel`] is given: the tokens and the module's parameters (weights in Burn's
/// `[in, out]` layout).
pub struct BypassInput<B: Backend> {
    pub tokens: FloatPrimitive<B>,
    pub norm_gamma: FloatPrimitive<B>,
    pub norm_beta: Option<FloatPrimitive<B>>,
    pub norm_eps: f64,
    pub down_weight: FloatPrimitive<B>,
    pub down_bias: Option<FloatPrimitive<B>>,
    pub up_weight: FloatPrimitive<B>,
    pub up_bias: Option<FloatPrimitive<B>>,
    pub scale: f64,
}

/// What [`EmbedTokensKernel`] is given.
pub struct TokensInput<B: Backend> {
    /// `[B, N, D]`, the patch embedding's output.
    pub patches: FloatPrimitive<B>,
    /// `[1, r, D]` each, in order (class token, then registers); may be empty.
    pub prefix: Vec<FloatPrimitive<B>>,
    /// `[1, P + N, D]` when `pos_on_prefix`, else `[1, N, D]` (timm's `no_embed_class`).
    pub pos_embed: FloatPrimitive<B>,
    pub pos_on_prefix: bool,
}

/// What [`CovariancePoolKernel`] is given: the tokens and the head's parameters.
pub struct CovariancePool<B: Backend> {
    pub tokens: FloatPrimitive<B>,
    pub prefix: usize,
    pub norm_gamma: FloatPrimitive<B>,
    pub norm_beta: Option<FloatPrimitive<B>>,
    pub norm_eps: f64,
    /// `[D, d']`, Burn's layout.
    pub reduce_weight: FloatPrimitive<B>,
    pub iterations: usize,
    pub eps: f64,
}

/// The fused kernels of one backend; a missing one is composed from Burn ops.
pub struct Kernels<B: Backend> {
    pub patchify: Option<PatchifyKernel<B>>,
    pub embed_tokens: Option<EmbedTokensKernel<B>>,
    pub linear: Option<LinearKernel<B>>,
    pub qkv_attention: Option<QkvAttentionKernel<B>>,
    pub newton_schulz: Option<NewtonSchulzKernel<B>>,
    pub covariance_pool: Option<CovariancePoolKernel<B>>,
    pub bypass: Option<BypassKernel<B>>,
    pub layer_norm: Option<LayerNormKernel<B>>,
}

impl<B: Backend> Clone for Kernels<B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Kernels<B> {}

/// Installed kernels, keyed by backend type. A handful of entries at most: a scan is fine.
static REGISTRY: RwLock<Vec<(TypeId, &'static (dyn Any + Send + Sync))>> = RwLock::new(Vec::new());

/// Installs (or replaces) backend `B`'s fused kernels for the whole process.
pub fn install<B: Backend>(kernels: Kernels<B>) {
    let entry: &'static (dyn Any + Send + Sync) = Box::leak(Box::new(kernels));
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    registry.retain(|(id, _)| *id != TypeId::of::<B>());
    registry.push((TypeId::of::<B>(), entry));
}

/// Removes backend `B`'s kernels: from now on its layers are composed from Burn ops.
pub fn uninstall<B: Backend>() {
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    registry.retain(|(id, _)| *id != TypeId::of::<B>());
}

/// Backend `B`'s installed kernels, if any.
pub fn installed<B: Backend>() -> Option<Kernels<B>> {
    let registry = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    registry
        .iter()
        .find(|(id, _)| *id == TypeId::of::<B>())
        .and_then(|(_, entry)| entry.downcast_ref::<Kernels<B>>().copied())
}

fn float<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> FloatPrimitive<B> {
    tensor.clone().into_primitive().tensor()
}

/// Images `[B, C, H, W]` (H and W multiples of `patch`) → their patches `[B, (H/P)·(W/P),
/// C·P·P]`, row-major, each in `(c, y, x)` order, as timm's stride-P convolution reads them. A
/// backend's kernel when one is installed (a six-dimensional permute is a strided copy most
/// backends do element by element: on Flex, two thirds of the demo model's embedding), Burn's
/// reshape and permute otherwise.
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.patchify)
        && let Some(out) = kernel(&float(&images), patch)
    {
        return Tensor::from_primitive(TensorPrimitive::Float(out));
    }
    composed_patchify(images, patch)
}

/// [`patchify`] from Burn ops only.
pub fn composed_patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [b, c, h, w] = images.dims();
    let p = patch;
    let (gh, gw) = (h / p, w / p);
    images
        .reshape([b, c, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * p * p])
}

/// The tokens entering block 0, `[B, P + N, D]`, from the patch tokens `patches: [B, N, D]`:
/// the `prefix` tokens (`[1, r, D]` each: class, registers) before each image's patches, and
/// the position embedding `pos_embed` added to all of them (`pos_on_prefix`, `[1, P + N, D]`)
/// or, as timm's `no_embed_class`, to the patches alone before the prefix goes in front
/// (`[1, N, D]`). A backend's kernel when one is installed (one pass over the tokens where
/// Burn's ops broadcast the prefix, concatenate and add: two of the demo model's four
/// microseconds of embedding per image on Flex), Burn's ops otherwise.
pub fn embed_tokens<B: Backend>(
    patches: Tensor<B, 3>,
    prefix: &[Tensor<B, 3>],
    pos_embed: Tensor<B, 3>,
    pos_on_prefix: bool,
) -> Tensor<B, 3> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.embed_tokens) {
        let input = TokensInput {
            patches: float(&patches),
            prefix: prefix.iter().map(float).collect(),
            pos_embed: float(&pos_embed),
            pos_on_prefix,
        };
        if let Some(out) = kernel(&input) {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    composed_embed_tokens(patches, prefix, pos_embed, pos_on_prefix)
}

/// [`embed_tokens`] from Burn ops only.
pub fn composed_embed_tokens<B: Backend>(
    patches: Tensor<B, 3>,
    prefix: &[Tensor<B, 3>],
    pos_embed: Tensor<B, 3>,
    pos_on_prefix: bool,
) -> Tensor<B, 3> {
    let [b, _, d] = patches.dims();
    let mut x = patches;
    if !pos_on_prefix {
        x = add_per_image(x, pos_embed.clone());
    }
    if !prefix.is_empty() {
        let mut parts: Vec<Tensor<B, 3>> = prefix
            .iter()
            .map(|p| {
                let r = p.dims()[1];
                p.clone().expand([b, r, d])
            })
            .collect();
        parts.push(x);
        x = Tensor::cat(parts, 1);
    }
    if pos_on_prefix {
        add_per_image(x, pos_embed)
    } else {
        x
    }
}

/// `x + e` for tokens `x: [B, T, D]` and one `[1, T, D]` added to every image, on `[B, T·D]`
/// views: the same broadcast, but Flex runs a row broadcast of a 2-D tensor vectorised and
/// walks a 3-D one over its leading dimension element by element (docs/benchmarks.md, second
/// round).
pub(crate) fn add_per_image<B: Backend>(x: Tensor<B, 3>, e: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    (x.reshape([b, t * d]) + e.reshape([1, t * d])).reshape([b, t, d])
}

/// `norm(x)` with the norm's epsilon `eps` (which Burn's `LayerNorm` keeps private): the
/// backend's kernel when one is installed and accepts the input, else Burn's own LayerNorm.
/// Burn's autodiff composes LayerNorm from about ten ops and derives twice as many for its
/// backward; `dmpo-infer` installs a kernel with its own backward for `Autodiff<Flex>`.
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.layer_norm) {
        let gamma = float(&norm.gamma.val());
        let beta = norm.beta.as_ref().map(|b| float(&b.val()));
        if let Some(out) = kernel(&float(&x), &gamma, beta.as_ref(), eps) {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    norm.forward(x)
}

/// `act(linear(x))`, fused when the backend has a linear kernel.
pub fn linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    activation: Activation,
) -> Tensor<B, D> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.linear) {
        let weight = float(&layer.weight.val());
        let bias = layer.bias.as_ref().map(|b| float(&b.val()));
        if let Some(out) = kernel(&float(&x), &weight, bias.as_ref(), activation) {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    let y = layer.forward(x);
    match activation {
        Activation::None => y,
        Activation::Gelu => gelu(y),
        Activation::Relu => relu(y),
    }
}

/// The square root of each `[d, d]` matrix of `a` by `iterations` Newton–Schulz steps: what
/// runs is the fused kernel a backend crate installed for `B` (on Flex,
/// `dmpo_infer::flex_kernels`' `fused_newton_schulz`, inference only), and otherwise the
/// reference [`crate::dmpo::newton_schulz_sqrt`], the maths of docs/method.md, which that kernel
/// is tested against.
pub fn matrix_sqrt<B: Backend>(a: Tensor<B, 3>, iterations: usize) -> Tensor<B, 3> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.newton_schulz)
        && let Some(out) = kernel(&float(&a), iterations)
    {
        return Tensor::from_primitive(TensorPrimitive::Float(out));
    }
    crate::dmpo::newton_schulz_sqrt(a, iterations)
}

/// The covariance head's features (`[B, T, D]` → `[B, d'(d'+1)/2]`): the backend's fused
/// kernel when one is installed and accepts the input (on Flex, inference only, one image per
/// task), otherwise the head's own composition, the upper triangle of
/// [`crate::dmpo::CovarianceHead::pooled_covariance`].
pub fn covariance_features<B: Backend>(
    head: &crate::dmpo::CovarianceHead<B>,
    tokens: Tensor<B, 3>,
) -> Tensor<B, 2> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.covariance_pool) {
        let input = CovariancePool {
            tokens: float(&tokens),
            prefix: head.num_prefix_tokens,
            norm_gamma: float(&head.norm.gamma.val()),
            norm_beta: head.norm.beta.as_ref().map(|b| float(&b.val())),
            norm_eps: crate::dmpo::CovarianceHead::<B>::NORM_EPS,
            reduce_weight: float(&head.reduce.weight.val()),
            iterations: head.iterations,
            eps: head.eps,
        };
        if let Some(out) = kernel(&input) {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    crate::dmpo::upper_triangle(head.pooled_covariance(tokens))
}

/// A bypass module's output `z` for the trunk's tokens `h` (`[B, T, D]` → `[B, T, D]`): the
/// backend's fused kernel when one is installed and accepts the input (on Flex, inference
/// only), otherwise the module's own composition, [`crate::dmpo::Bypass::composed_forward`].
pub fn bypass<B: Backend>(module: &crate::dmpo::Bypass<B>, h: Tensor<B, 3>) -> Tensor<B, 3> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.bypass) {
        let input = BypassInput {
            tokens: float(&h),
            norm_gamma: float(&module.norm.gamma.val()),
            norm_beta: module.norm.beta.as_ref().map(|b| float(&b.val())),
            norm_eps: crate::dmpo::Bypass::<B>::NORM_EPS,
            down_weight: float(&module.down.weight.val()),
            down_bias: module.down.bias.as_ref().map(|b| float(&b.val())),
            up_weight: float(&module.up.weight.val()),
            up_bias: module.up.bias.as_ref().map(|b| float(&b.val())),
            scale: module.scale,
        };
        if let Some(out) = kernel(&input) {
            return Tensor::from_primitive(TensorPrimitive::Float(out));
        }
    }
    module.composed_forward(h)
}

/// Self-attention from the output of a fused `qkv` projection `[B, N, 3·D]` → `[B, N, D]`.
pub fn qkv_attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    if let Some(kernel) = installed::<B>().and_then(|k| k.qkv_attention)
        && let Some(out) = kernel(&float(&qkv), heads)
    {
        return Tensor::from_primitive(TensorPrimitive::Float(out));
    }
    composed_qkv_attention(qkv, heads)
}

/// [`qkv_attention`] from Burn ops only: the heads split into `[B, H, N, d]`, Burn's
/// `attention` op, the heads merged back.
pub fn composed_qkv_attention<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, n, d3] = qkv.dims();
    let d = d3 / 3;
    let hd = d / heads;
    let qkv = qkv.reshape([b, n, 3, heads, hd]);
    let head = |i: usize| {
        qkv.clone()
            .narrow(2, i, 1)
            .reshape([b, n, heads, hd])
            .swap_dims(1, 2)
    };
    let out = attention(head(0), head(1), head(2), None, None, Default::default());
    out.swap_dims(1, 2).reshape([b, n, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn::backend::NdArray;

    fn doubling_linear(
        x: &FloatPrimitive<B>,
        _w: &FloatPrimitive<B>,
        _b: Option<&FloatPrimitive<B>>,
        _a: Activation,
    ) -> Option<FloatPrimitive<B>> {
        let x: Tensor<B, 2> = Tensor::from_primitive(TensorPrimitive::Float(x.clone()));
        Some((x * 2.0).into_primitive().tensor())
    }

    fn declining_linear(
        _x: &FloatPrimitive<B>,
        _w: &FloatPrimitive<B>,
        _b: Option<&FloatPrimitive<B>>,
        _a: Activation,
    ) -> Option<FloatPrimitive<B>> {
        None
    }

    /// One test, so that installing for the process does not race another test.
    #[test]
    fn installed_kernels_are_used_declined_ones_composed_and_uninstall_restores_burn_ops() {
        let device = Default::default();
        let layer = burn::nn::LinearConfig::new(3, 3).init::<B>(&device);
        let x = Tensor::<B, 2>::from_floats([[1.0, -2.0, 3.0]], &device);
        let composed = layer.forward(x.clone());
        assert!(installed::<B>().is_none());

        install::<B>(Kernels {
            patchify: None,
            embed_tokens: None,
            linear: Some(doubling_linear),
            qkv_attention: None,
            newton_schulz: None,
            covariance_pool: None,
            bypass: None,
            layer_norm: None,
        });
        let fused = linear(&layer, x.clone(), Activation::None);
        fused
            .to_data()
            .assert_eq(&(x.clone() * 2.0).to_data(), true);
        // Another backend type is not affected.
        assert!(installed::<burn::backend::Autodiff<B>>().is_none());

        install::<B>(Kernels {
            patchify: None,
            embed_tokens: None,
            linear: Some(declining_linear),
            qkv_attention: None,
            newton_schulz: None,
            covariance_pool: None,
            bypass: None,
            layer_norm: None,
        });
        linear(&layer, x.clone(), Activation::None)
            .to_data()
            .assert_eq(&composed.to_data(), true);

        uninstall::<B>();
        assert!(installed::<B>().is_none());
        linear(&layer, x.clone(), Activation::Gelu)
            .to_data()
            .assert_eq(&gelu(composed).to_data(), true);
    }
}
