//! The fused kernels under autodiff, for training on `Autodiff<Flex>`.
//!
//! Burn's autodiff composes a linear layer from Flex's batched matmul, whose split over
//! threads is poor at the widths the demo and ViT-Ti/S use (docs/benchmarks.md), and its
//! backward (`x`'s gradient, the one a frozen backbone needs) is the same kind of product. Here
//! the forward is [`super::linear`]'s kernel and `x`'s gradient is that kernel again with the
//! weight transposed (a strided view, no copy); the activation's derivative is one vectorised
//! pass. The weight and bias gradients (full fine-tuning) are Flex's own. GELU uses the forward
//! kernel's rational `erf` (≤ 5e-7 from the exact one; libm's scalar `erff`, which Flex's GELU
//! calls, was a fifth of the demo's training time). Attention's backward writes `qkv`'s
//! gradient in place ([`super::attention::qkv_attention_backward`]); it rounds differently
//! from Burn's composition, so seeded training lands on nearby (not identical) weights, the
//! same ones on any thread count.

use burn::backend::Flex;
use burn::tensor::ops::{FloatTensor, ModuleOps};
use burn::tensor::{Bytes, DType, Shape};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::Activation;

use rayon::prelude::*;

use super::math;

type AD = Autodiff<Flex>;

#[derive(Debug)]
struct FusedLinearBackward;

#[derive(Clone, Debug)]
struct State {
    /// `x`, kept when the weight needs a gradient.
    x: Option<NodeId>,
    /// The weight, kept when `x` needs a gradient.
    weight: Option<NodeId>,
    /// x·W + b before the activation (when there is one), for its derivative.
    pre_activation: Option<FlexTensor>,
    activation: Activation,
}

impl<const N: usize> Backward<Flex, N> for FusedLinearBackward {
    type State = State;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let mut grad = grads.consume::<Flex>(&ops.node);
        if let Some(z) = &ops.state.pre_activation {
            grad = activation_backward(z, grad, ops.state.activation);
        }
        let [node_x, node_weight, node_bias] =
            [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        if let Some(node) = node_weight {
            let x = checkpointer.retrieve_node_output::<FlexTensor>(ops.state.x.expect("x kept"));
            grads.register::<Flex>(node.id, Flex::linear_weight_backward(x, grad.clone()));
        }
        if let Some(node) = node_bias {
            grads.register::<Flex>(node.id, Flex::linear_bias_backward(grad.clone()));
        }
        if let Some(node) = node_x {
            let w = checkpointer
                .retrieve_node_output::<FlexTensor>(ops.state.weight.expect("weight kept"));
            let dx = super::linear::linear(&grad, &w.transpose(0, 1), None, Activation::None)
                .unwrap_or_else(|| Flex::linear_x_backward(w, grad));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// [`super::patchify::patchify`] on `Autodiff<Flex>` for images that take no gradient (the
/// input of a frozen patch embedding, always so here); `None` (composed, with Burn's backward)
/// for tracked ones.
pub fn patchify(images: &FloatTensor<AD>, patch: usize) -> Option<FloatTensor<AD>> {
    if images.is_tracked() {
        return None;
    }
    use burn::tensor::backend::AutodiffBackend;
    super::patchify::patchify(&images.primitive, patch).map(AD::from_inner)
}

/// `act(x·W + b)` on `Autodiff<Flex>`; `None` where the Flex kernel declines.
pub fn linear(
    x: &FloatTensor<AD>,
    weight: &FloatTensor<AD>,
    bias: Option<&FloatTensor<AD>>,
    activation: Activation,
) -> Option<FloatTensor<AD>> {
    let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
    let (x_p, weight_p, bias_p) = (&x.primitive, &weight.primitive, bias.map(|b| &b.primitive));
    // x·W + b is only kept for the derivative of a product that takes part in a backward pass.
    let (output, pre_activation) =
        if x_tracked || weight_tracked || bias.is_some_and(|b| b.is_tracked()) {
            super::linear::linear_keeping_pre_activation(x_p, weight_p, bias_p, activation)?
        } else {
            (
                super::linear::linear(x_p, weight_p, bias_p, activation)?,
                None,
            )
        };
    macro_rules! run {
        ($nodes:expr) => {
            match FusedLinearBackward
                .prepare::<NoCheckpointing>($nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(mut prep) => {
                    let state = State {
                        x: weight_tracked.then(|| prep.checkpoint(x)),
                        weight: x_tracked.then(|| prep.checkpoint(weight)),
                        pre_activation: pre_activation.clone(),
                        activation,
                    };
                    prep.finish(state, output.clone())
                }
                OpsKind::UnTracked(prep) => prep.finish(output.clone()),
            }
        };
    }
    Some(match bias {
        Some(b) => run!([x.node.clone(), weight.node.clone(), b.node.clone()]),
        None => run!([x.node.clone(), weight.node.clone()]),
    })
}

#[derive(Debug)]
struct QkvAttentionBackward;

#[derive(Clone, Debug)]
struct AttentionState {
    qkv: FlexTensor,
    /// Every head's softmax probabilities, `[B·H, N, N]`.
    probs: FlexTensor,
    heads: usize,
}

impl Backward<Flex, 1> for QkvAttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [node] = ops.parents;
        if let Some(node) = node {
            let s = ops.state;
            let d_qkv = super::attention::qkv_attention_backward(&s.qkv, &s.probs, &grad, s.heads)
                .expect("the forward accepted these shapes");
            grads.register::<Flex>(node.id, d_qkv);
        }
    }
}

/// Attention from `qkv` on `Autodiff<Flex>`: the forward kernel, keeping the probabilities
/// when a gradient is needed, and a backward that writes `qkv`'s gradient in place (no head
/// split or merge copies either way). `None` where the Flex kernel declines.
pub fn qkv_attention(qkv: &FloatTensor<AD>, heads: usize) -> Option<FloatTensor<AD>> {
    super::attention::dims(&qkv.primitive, heads)?;
    Some(
        match QkvAttentionBackward
            .prepare::<NoCheckpointing>([qkv.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, probs) =
                    super::attention::qkv_attention_keeping_probs(&qkv.primitive, heads)?;
                let state = AttentionState {
                    qkv: qkv.primitive.clone(),
                    probs,
                    heads,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(super::attention::qkv_attention(&qkv.primitive, heads)?)
            }
        },
    )
}

#[derive(Debug)]
struct LayerNormBackward;

#[derive(Clone, Debug)]
struct LayerNormState {
    /// The input, contiguous.
    x: FlexTensor,
    /// γ, contiguous.
    gamma: FlexTensor,
    stats: std::sync::Arc<super::layer_norm::RowStats>,
}

impl<const N: usize> Backward<Flex, N> for LayerNormBackward {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [node_x, node_gamma, node_beta] =
            [0, 1, 2].map(|i| ops.parents.get(i).cloned().flatten());
        let s = ops.state;
        fn f32s(t: &FlexTensor) -> &[f32] {
            t.as_slice::<f32>().expect("contiguous f32")
        }
        let out = super::layer_norm::backward(
            f32s(&s.x),
            f32s(&grad),
            f32s(&s.gamma),
            &s.stats,
            node_gamma.is_some(),
            node_beta.is_some(),
        );
        let tensor = |values: Vec<f32>, shape: Shape| {
            FlexTensor::new(
                Bytes::from_elems(values),
                Layout::contiguous(shape),
                DType::F32,
            )
        };
        let vector = || s.gamma.layout().shape().clone();
        if let (Some(node), Some(dg)) = (node_gamma, out.gamma) {
            grads.register::<Flex>(node.id, tensor(dg, vector()));
        }
        if let (Some(node), Some(db)) = (node_beta, out.beta) {
            grads.register::<Flex>(node.id, tensor(db, vector()));
        }
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(out.x, s.x.layout().shape().clone()));
        }
    }
}

/// LayerNorm on `Autodiff<Flex>`: [`super::layer_norm`]'s forward, keeping each row's mean and
/// `1/σ`, and its one-pass backward. `None` where the kernel declines.
pub fn layer_norm(
    x: &FloatTensor<AD>,
    gamma: &FloatTensor<AD>,
    beta: Option<&FloatTensor<AD>>,
    eps: f64,
) -> Option<FloatTensor<AD>> {
    // Made contiguous once: the forward reads them so, and the backward keeps them (a covariance
    // head normalises a narrowed view of the tokens).
    let (x_c, gamma_c) = (x.primitive.to_contiguous(), gamma.primitive.to_contiguous());
    let (out, stats) = super::layer_norm::forward(&x_c, &gamma_c, beta.map(|b| &b.primitive), eps)?;
    let stats = std::sync::Arc::new(stats);
    macro_rules! run {
        ($nodes:expr) => {
            match LayerNormBackward
                .prepare::<NoCheckpointing>($nodes)
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = LayerNormState {
                        x: x_c.clone(),
                        gamma: gamma_c.clone(),
                        stats: stats.clone(),
                    };
                    prep.finish(state, out.clone())
                }
                OpsKind::UnTracked(prep) => prep.finish(out.clone()),
            }
        };
    }
    Some(match beta {
        Some(b) => run!([x.node.clone(), gamma.node.clone(), b.node.clone()]),
        None => run!([x.node.clone(), gamma.node.clone()]),
    })
}

/// Element-wise passes this long or longer are split over the threads in chunks of this size
/// (each element is independent, so the split changes no bit).
const PARALLEL_CHUNK: usize = 1 << 14;

/// `grad · act'(z)` in one vectorised pass: GELU'(z) = Φ(z) + z·φ(z); ReLU'(z) = [z > 0].
fn activation_backward(z: &FlexTensor, grad: FlexTensor, activation: Activation) -> FlexTensor {
    fn apply(out: &mut [f32], z: &[f32], f: impl Fn(f32, f32) -> f32 + Copy + Sync) {
        out.par_chunks_mut(PARALLEL_CHUNK)
            .zip(z.par_chunks(PARALLEL_CHUNK))
            .for_each(|(chunk, z)| math::zip_in_place(chunk, z, f));
    }
    let z = z.to_contiguous();
    let z = z.as_slice::<f32>().expect("contiguous f32");
    // The incoming gradient (consumed from the graph) is updated in place; `storage_mut` copies
    // it only if something else still holds it.
    let mut grad = {
        let grad = grad;
        grad.to_contiguous()
    };
    let out = grad.storage_mut::<f32>();
    match activation {
        Activation::None => {}
        Activation::Gelu => apply(out, z, |g, z| g * math::gelu_derivative(z)),
        Activation::Relu => apply(out, z, |g, z| if z > 0.0 { g } else { 0.0 }),
    }
    grad
}
