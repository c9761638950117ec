use burn::config::Config;

use crate::dyt::DispatchConfig;

/// Which predictor the early exits use.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum EarlyHead {
    /// Second-order pooling with iSQRT-COV normalisation (DMPO).
    Covariance,
    /// Norm + pooled token + linear (the plain multi-exit baseline).
    Linear,
}

/// AdaptFormer-style parallel adapter in every block of the frozen backbone.
#[derive(Config, Debug, PartialEq)]
pub struct AdapterConfig {
    /// Bottleneck width r.
    #[config(default = 16)]
    pub dim: usize,
    /// Scale s of the adapter branch (0.1 for large datasets, 1.0 for VTAB-1k, as DyT).
    #[config(default = 0.1)]
    pub scale: f64,
}

/// The bypass module between the trunk and each early exit.
#[derive(Config, Debug, PartialEq)]
pub struct BypassConfig {
    /// Bottleneck width; `None` = embed_dim / 12 (64 for ViT-B).
    #[config(default = "None")]
    pub dim: Option<usize>,
    #[config(default = 1.0)]
    pub scale: f64,
}

/// The covariance predictor at the early exits (iSQRT-COV defaults).
#[derive(Config, Debug, PartialEq)]
pub struct CovarianceConfig {
    /// Reduced token width d' before the covariance (d'(d'+1)/2 features); `None` =
    /// embed_dim / 12, at least 8 (64 for ViT-B, iSQRT-COV's reduction for its ResNet heads
    /// scaled to the width).
    #[config(default = "None")]
    pub dim: Option<usize>,
    /// Newton–Schulz iterations T.
    #[config(default = 5)]
    pub iterations: usize,
    /// Add a linear head on the class token to the logits (So-ViT's fusion).
    #[config(default = false)]
    pub fuse_cls: bool,
    /// Guards the trace normalisation of rank-deficient or all-zero covariances.
    #[config(default = 1e-5)]
    pub eps: f64,
}

/// A DMPO multi-exit model on a frozen backbone. The defaults are DMPO; switch the bypass off,
/// use linear early heads and a one-phase loss and it is the plain multi-exit baseline.
#[derive(Config, Debug, PartialEq)]
pub struct DmpoConfig {
    pub num_classes: usize,
    /// Blocks after which an exit sits, counted from 1; the last must be the backbone's depth.
    /// Empty = every depth/4 blocks ({3, 6, 9, 12} for a 12-block model).
    #[config(default = "Vec::new()")]
    pub exits: Vec<usize>,
    /// `None`: no adapters (only bypasses and heads train).
    #[config(default = "Some(AdapterConfig::new())")]
    pub adapter: Option<AdapterConfig>,
    /// `None`: early exits read the trunk tokens directly (ablation / baseline).
    #[config(default = "Some(BypassConfig::new())")]
    pub bypass: Option<BypassConfig>,
    #[config(default = "EarlyHead::Covariance")]
    pub early_head: EarlyHead,
    #[config(default = "CovarianceConfig::new()")]
    pub covariance: CovarianceConfig,
    /// Stop the early exits' gradients at the trunk, so early losses train only bypass and head.
    #[config(default = false)]
    pub detach_exit_inputs: bool,
    /// DyT's token dispatch in every block (`None`: every token through every MLP).
    #[config(default = "None")]
    pub dispatch: Option<DispatchConfig>,
}

impl DmpoConfig {
    /// The plain multi-exit baseline on equal terms: same adapters and exits, no bypass,
    /// linear heads everywhere.
    pub fn baseline(num_classes: usize) -> Self {
        Self::new(num_classes)
            .with_bypass(None)
            .with_early_head(EarlyHead::Linear)
    }

    /// The exit positions for a backbone of `depth` blocks (resolving the default).
    pub fn exit_blocks(&self, depth: usize) -> Vec<usize> {
        if !self.exits.is_empty() {
            return self.exits.clone();
        }
        let stages = depth.clamp(1, 4);
        (1..=stages).map(|k| (depth * k).div_ceil(stages)).collect()
    }

    /// Checks the exit list against the backbone depth and the widths, with a message a user can
    /// act on.
    pub fn validate(&self, depth: usize) -> Result<(), String> {
        let exits = self.exit_blocks(depth);
        check_exit_order(&exits)?;
        if exits.last() != Some(&depth) {
            return Err(format!(
                "the last exit must be after the last block ({depth}), got exits {exits:?}"
            ));
        }
        if self.num_classes == 0 {
            return Err("num_classes must be at least 1".into());
        }
        if self.adapter.as_ref().is_some_and(|a| a.dim == 0)
            || self.bypass.as_ref().and_then(|b| b.dim) == Some(0)
            || self.covariance.dim == Some(0)
        {
            return Err("adapter, bypass and covariance widths must be at least 1".into());
        }
        Ok(())
    }
}

/// Exits must be strictly increasing block numbers from 1; this needs no backbone, so a saved
/// config can be checked before one is loaded.
pub fn check_exit_order(exits: &[usize]) -> Result<(), String> {
    if exits.windows(2).any(|w| w[0] >= w[1]) || exits.first() == Some(&0) {
        return Err(format!(
            "exits {exits:?} must be strictly increasing block numbers from 1"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_exits_are_every_quarter_of_the_depth() {
        let c = DmpoConfig::new(10);
        assert_eq!(c.exit_blocks(12), vec![3, 6, 9, 12]);
        assert_eq!(c.exit_blocks(6), vec![2, 3, 5, 6]);
        assert_eq!(c.exit_blocks(2), vec![1, 2]);
    }

    #[test]
    fn bad_exit_lists_are_explained() {
        let bad = |exits: Vec<usize>| DmpoConfig::new(3).with_exits(exits).validate(12);
        assert!(bad(vec![3, 6, 9, 12]).is_ok());
        assert!(bad(vec![6, 3, 12]).unwrap_err().contains("increasing"));
        assert!(bad(vec![3, 6]).unwrap_err().contains("last exit"));
        assert!(bad(vec![0, 12]).unwrap_err().contains("from 1"));
    }
}
