//! DyT: Dynamic Tuning (Zhao et al., NeurIPS 2024), MLP dispatch. In every block a
//! [`TokenDispatcher`] scores the patch tokens after the attention residual; only the tokens it
//! keeps go through the block's MLP, the others keep the residual (and still take the adapter).
//! Class and register tokens are always kept, so the exits that read them are never starved.
//!
//! ```text
//! x  = x + Attn(LN1(x))                          all tokens
//! m  = gate(W_d · x_patch + b_d)                 m ∈ {0,1} per patch token, 1 for prefix tokens
//! x' = x + m ⊙ MLP(LN2(x)) + s · Adapter(LN2(x))
//! ```
//! Training samples the gate with straight-through Gumbel-sigmoid noise ([`straight_through_gate`],
//! temperature 5 as in the public code); inference keeps a token where its logit is positive
//! ([`hard_gate`]) and runs the MLP on the kept tokens alone ([`Dispatch::Hard`]: gather, MLP,
//! scatter), so the saving is real, not a mask. The losses (complete-model CE, distillation, the
//! activation-rate term) are the trainer's: see `docs/method.md`.
//! DyT's MoE adapter is not here: its code was never released and its design cannot be pinned
//! from the paper's summary alone.

mod config;
mod gate;
mod sparse_mlp;
mod token_dispatcher;

pub use config::DispatchConfig;
pub use gate::{hard_gate, straight_through_gate};
pub use sparse_mlp::mlp_on_kept_tokens;
pub use token_dispatcher::TokenDispatcher;

/// How a block with a dispatcher treats its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dispatch {
    /// Every token through the MLP: the "complete model" of DyT's training, and the plain block.
    Complete,
    /// Training: a straight-through Gumbel-sigmoid sample of the gate at this temperature; the
    /// MLP runs on every token and its output is masked (the gradient needs them all).
    Sampled { temperature: f64 },
    /// Inference: tokens whose logit is positive are gathered into one `[kept, D]` matrix for
    /// the MLP and scattered back; the others skip it.
    Hard,
}
