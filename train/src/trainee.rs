use burn::module::{ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use dmpo_model::dmpo::DmpoModel;
use dmpo_model::dyt::Dispatch;

use crate::batcher::ExitBatch;
use crate::metrics::MultiExitOutput;
use crate::self_distillation::{SelfDistillation, kl_to_teacher};

/// The model as the Learner trains it: the DMPO model plus the loss settings.
#[derive(Module, Debug)]
pub struct Trainee<B: Backend> {
    pub model: DmpoModel<B>,
    /// Label smoothing ε (0 = none).
    pub label_smoothing: f64,
    /// Decoupled weight decay, applied to trainable matrices only (not to norms or biases).
    pub weight_decay: f64,
    /// Early exits also learn from the last exit's softened prediction (off by default).
    #[module(skip)]
    pub distillation: SelfDistillation,
    /// How DyT's dispatchers train (used when the model dispatches tokens).
    #[module(skip)]
    pub dyt: crate::DytLoss,
    /// Stops the run at a non-finite loss.
    #[module(skip)]
    pub guard: crate::LossGuard,
    /// Sums the gradients across a group of nodes (none: one process).
    #[module(skip)]
    pub sync: crate::GradientSync,
}

impl<B: Backend> Trainee<B> {
    /// Every exit's logits and cross-entropy, and their weighted sum.
    ///
    /// With DyT's dispatchers, training runs the model twice (the public code's recipe): with
    /// sampled gates (the *dispatched* model, whose logits are reported) and with every token
    /// (the *complete* model). Each exit's loss gains the complete model's cross-entropy and the
    /// KL from the complete exit to the dispatched one; the activation-rate term
    /// `(mean m − r)²` over every block's patch tokens is added once. Validation runs the
    /// dispatched model as inference does (hard gates, real skipping).
    pub fn forward_loss(&self, batch: ExitBatch<B>) -> MultiExitOutput<B> {
        let device = batch.images.device();
        let dispatch = self
            .model
            .dispatch
            .as_ref()
            .filter(|_| B::ad_enabled(&device));
        let (logits, masks, complete) = match dispatch {
            Some(_) => {
                let sampled = Dispatch::Sampled {
                    temperature: self.dyt.temperature,
                };
                let (logits, masks) = self.model.forward_exits_with(batch.images.clone(), sampled);
                let (complete, _) = self
                    .model
                    .forward_exits_with(batch.images, Dispatch::Complete);
                (logits, masks, Some(complete))
            }
            None => (self.model.forward_exits(batch.images), Vec::new(), None),
        };
        let ce = cross_entropy(self.label_smoothing, &device);
        let last = logits.len() - 1;
        let exit_losses: Vec<Tensor<B, 1>> = logits
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let hard = ce.forward(l.clone(), batch.targets.clone());
                let loss = if k == last {
                    hard
                } else {
                    self.distillation
                        .early_exit_loss(hard, l.clone(), logits[last].clone())
                };
                match (&complete, dispatch) {
                    (Some(c), Some(_)) => {
                        loss + ce.forward(c[k].clone(), batch.targets.clone())
                            * self.dyt.complete_weight
                            + kl_to_teacher(l.clone(), c[k].clone(), 1.0) * self.dyt.distill_weight
                    }
                    _ => loss,
                }
            })
            .collect();
        let mut loss = weighted_sum(&exit_losses, &batch.loss_weights);
        if let (Some(d), false) = (dispatch, masks.is_empty()) {
            let rates = masks
                .iter()
                .map(|m| m.clone().mean().reshape([1]))
                .collect();
            let rate = Tensor::cat(rates, 0).mean();
            loss = loss + (rate - d.token_rate).powi_scalar(2) * self.dyt.rate_weight;
        }
        MultiExitOutput {
            loss,
            exit_losses,
            logits,
            targets: batch.targets,
        }
    }
}

/// The Learner's train and validation steps for a trainee type with a `forward_loss(batch)`,
/// a `weight_decay` and a `guard` field: backward on the weighted loss (the guard checks it),
/// decoupled decay, then AdamW.
macro_rules! exit_loss_steps {
    ($trainee:ident) => {
        impl<B: burn::prelude::Backend> $crate::trainee::Guarded for $trainee<B> {
            fn guard(&self) -> &$crate::LossGuard {
                &self.guard
            }

            fn set_sync(&mut self, sync: $crate::GradientSync) {
                self.sync = sync;
            }
        }

        impl<B: burn::tensor::backend::AutodiffBackend> burn::train::TrainStep for $trainee<B> {
            type Input = $crate::ExitBatch<B>;
            type Output = $crate::MultiExitOutput<B>;

            fn step(
                &self,
                batch: $crate::ExitBatch<B>,
            ) -> burn::train::TrainOutput<$crate::MultiExitOutput<B>> {
                let (ends_epoch, share) = (batch.ends_epoch, batch.share);
                let out = self.forward_loss(batch);
                self.guard.check(&out.loss, ends_epoch);
                let grads = if share == 1.0 {
                    out.loss.backward()
                } else {
                    out.loss.clone().mul_scalar(share).backward()
                };
                burn::train::TrainOutput::new(self, grads, out)
            }

            fn optimize<BB, O>(
                self,
                optim: &mut O,
                lr: f64,
                grads: burn::optim::GradientsParams,
            ) -> Self
            where
                BB: burn::tensor::backend::AutodiffBackend,
                O: burn::optim::Optimizer<Self, BB>,
                Self: burn::module::AutodiffModule<BB>,
            {
                // Every node takes part in the sum, whatever its own loss was.
                let grads = self.sync.all_reduce::<BB::InnerBackend>(grads);
                // A non-finite loss poisons the gradients: keep the last good weights.
                if self.guard.tripped() {
                    return self;
                }
                let weight_decay = self.weight_decay;
                $crate::trainee::decay_then_step::<B, BB, _, _>(
                    self,
                    optim,
                    lr,
                    weight_decay,
                    grads,
                )
            }
        }

        impl<B: burn::prelude::Backend> burn::train::InferenceStep for $trainee<B> {
            type Input = $crate::ExitBatch<B>;
            type Output = $crate::MultiExitOutput<B>;

            fn step(&self, batch: $crate::ExitBatch<B>) -> $crate::MultiExitOutput<B> {
                self.forward_loss(batch)
            }
        }
    };
}
pub(crate) use exit_loss_steps;

/// A trainee whose steps check their losses with a [`LossGuard`](crate::LossGuard) (the Learner
/// loop stops on the same guard) and sum their gradients with a
/// [`GradientSync`](crate::GradientSync) (set by the loop when training as one of a group of
/// nodes).
pub trait Guarded {
    fn guard(&self) -> &crate::LossGuard;
    fn set_sync(&mut self, sync: crate::GradientSync);
}

exit_loss_steps!(Trainee);

/// The multi-exit loss `Σ_k w_k · L_k` (the step's loss weights, one per exit).
pub(crate) fn weighted_sum<B: Backend>(
    exit_losses: &[Tensor<B, 1>],
    weights: &[f32],
) -> Tensor<B, 1> {
    exit_losses
        .iter()
        .zip(weights)
        .map(|(l, &w)| l.clone() * w)
        .reduce(|a, b| a + b)
        .expect("at least one exit")
}

/// Cross-entropy with label smoothing `ε` (0 = none).
pub(crate) fn cross_entropy<B: Backend>(
    label_smoothing: f64,
    device: &B::Device,
) -> burn::nn::loss::CrossEntropyLoss<B> {
    let smoothing = (label_smoothing > 0.0).then_some(label_smoothing as f32);
    CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device)
}

/// The optimiser step after AdamW's decoupled weight decay on trainable matrices.
pub(crate) fn decay_then_step<B, BB, M, O>(
    module: M,
    optim: &mut O,
    lr: f64,
    weight_decay: f64,
    grads: GradientsParams,
) -> M
where
    B: AutodiffBackend,
    BB: AutodiffBackend,
    M: Module<B> + burn::module::AutodiffModule<BB>,
    O: Optimizer<M, BB>,
{
    let module = if weight_decay > 0.0 {
        <M as Module<B>>::map(
            module,
            &mut DecayMatrices {
                factor: 1.0 - lr * weight_decay,
            },
        )
    } else {
        module
    };
    optim.step(lr, module, grads)
}

/// AdamW's decoupled decay `p ← p·(1 − lr·wd)`, on trainable parameters of rank ≥ 2 only:
/// decaying norms and biases toward zero only hurts (the usual timm / DyT recipe).
struct DecayMatrices {
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for DecayMatrices {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if D < 2 || !param.is_require_grad() {
            return param;
        }
        let factor = self.factor;
        // Scaled outside the graph, so the parameter stays a leaf.
        param.map(|t| Tensor::from_inner(t.inner() * factor).require_grad())
    }
}
