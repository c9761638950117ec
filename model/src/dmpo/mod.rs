//! DMPO: Decoupled Multi-Predictor Optimization (Luo et al., ICCV 2025) on a frozen ViT.
//!
//! ```text
//! images ─► embed ─► [block+adapter]×s₁ ─►h₁─► [block+adapter]×… ─►h₂─► … ─► [blocks] ─► h_K
//!                                         │                         │                      │
//!                                      Bypass₁                   Bypass₂              LinearHead
//!                                         │                         │                      │
//!                                 CovarianceHead₁           CovarianceHead₂             exit K
//! ```
//! The trunk passes `h_k` on unchanged; each early exit reads it through its own [`Bypass`], so
//! the exit's loss shapes the bypass, not the features deeper blocks consume. Early exits classify
//! second-order statistics ([`CovarianceHead`]); the last exit is the backbone's own head.
//! See `docs/method.md` for the equations and which choices come from the paper.

mod adapter;
mod bypass;
mod config;
mod cost;
mod covariance_head;
mod exit_head;
mod linear_head;
mod model;
mod newton_schulz;

pub use adapter::Adapter;
pub use bypass::Bypass;
pub use config::{
    AdapterConfig, BypassConfig, CovarianceConfig, DmpoConfig, EarlyHead, check_exit_order,
};
pub use cost::{StageCost, mlp_macs_per_token, vit_attention_macs, vit_block_macs, vit_embed_macs};
pub use covariance_head::CovarianceHead;
pub use exit_head::ExitHead;
pub use linear_head::LinearHead;
pub use model::{DmpoModel, ParamCounts};
pub use newton_schulz::{newton_schulz_sqrt, upper_triangle};

/// `x · scale`, without the pass over `x` when the scale is 1 (the demo's and DyT's adapter
/// scale): multiplying by 1 changes no bit, in the forward or the gradient.
fn scaled<B: burn::prelude::Backend, const D: usize>(
    x: burn::prelude::Tensor<B, D>,
    scale: f64,
) -> burn::prelude::Tensor<B, D> {
    if scale == 1.0 { x } else { x * scale }
}
