use burn::prelude::*;

use super::{CovarianceHead, LinearHead};

/// The predictor at one exit. (Both variants are a few hundred bytes of handles; boxing one
/// would only add an indirection to every forward pass.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ExitHead<B: Backend> {
    Covariance(CovarianceHead<B>),
    Linear(LinearHead<B>),
}

impl<B: Backend> ExitHead<B> {
    /// `[B, T, D]` → logits `[B, classes]`.
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        match self {
            Self::Covariance(h) => h.forward(tokens),
            Self::Linear(h) => h.forward(tokens),
        }
    }

    /// MACs per image on `tokens` tokens (prefix tokens included).
    pub fn macs(&self, tokens: u64) -> u64 {
        match self {
            Self::Covariance(h) => h.macs(tokens),
            Self::Linear(h) => h.macs(),
        }
    }
}
