//! The methods a comparison trains on the same backbone, data and seeds: DMPO, the plain
//! multi-exit baseline, and the two single-exit references the paper's claims are measured
//! against (what adapters give without exits, and what the frozen features give alone).

use dmpo_model::dmpo::{AdapterConfig, DmpoConfig};

use crate::LossSchedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arm {
    /// DMPO: bypasses, covariance heads at early exits, the two-phase loss weights.
    Dmpo,
    /// Plain multi-exit tuning (MET-style): the same exits and adapters, linear heads, no
    /// bypass, uniform loss weights.
    Baseline,
    /// Adapters in every block and one exit after the last block: the best a tuner without
    /// exits gets (full depth only).
    LastExit,
    /// The frozen backbone and a linear head on its final class token: no adapters.
    LinearProbe,
}

impl Arm {
    /// The name in reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Dmpo => "DMPO",
            Arm::Baseline => "baseline",
            Arm::LastExit => "last exit",
            Arm::LinearProbe => "linear probe",
        }
    }

    /// The output sub-directory.
    pub fn dir(self) -> &'static str {
        match self {
            Arm::Dmpo => "dmpo",
            Arm::Baseline => "baseline",
            Arm::LastExit => "last-exit",
            Arm::LinearProbe => "linear-probe",
        }
    }

    /// Whether the arm has early exits (and so an accuracy-vs-cost curve).
    pub fn exits_early(self) -> bool {
        matches!(self, Arm::Dmpo | Arm::Baseline)
    }

    /// Whether self-distillation into early exits applies.
    pub fn distills(self) -> bool {
        self == Arm::Dmpo
    }

    /// The model for `classes` classes on a backbone of `depth` blocks, given the exits and
    /// adapters the multi-exit arms use.
    pub fn model_config(
        self,
        classes: usize,
        depth: usize,
        exits: &[usize],
        adapter: AdapterConfig,
    ) -> DmpoConfig {
        let mut config = match self {
            Arm::Dmpo => DmpoConfig::new(classes),
            _ => DmpoConfig::baseline(classes),
        };
        config.exits = if self.exits_early() {
            exits.to_vec()
        } else {
            vec![depth]
        };
        config.adapter = (self != Arm::LinearProbe).then_some(adapter);
        config
    }

    /// The multi-exit loss weights.
    pub fn schedule(self) -> LossSchedule {
        match self {
            Arm::Dmpo => LossSchedule::new(),
            _ => LossSchedule::uniform(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_exit_arms_keep_one_exit_and_the_probe_has_no_adapters() {
        let adapter = AdapterConfig::new();
        let dmpo = Arm::Dmpo.model_config(10, 12, &[3, 6, 12], adapter.clone());
        assert_eq!(dmpo.exits, vec![3, 6, 12]);
        assert!(dmpo.bypass.is_some() && dmpo.adapter.is_some());
        let base = Arm::Baseline.model_config(10, 12, &[3, 6, 12], adapter.clone());
        assert!(base.bypass.is_none() && base.adapter.is_some());
        let last = Arm::LastExit.model_config(10, 12, &[3, 6, 12], adapter.clone());
        assert_eq!(last.exits, vec![12]);
        assert!(last.adapter.is_some());
        let probe = Arm::LinearProbe.model_config(10, 12, &[3, 6, 12], adapter);
        assert_eq!(probe.exits, vec![12]);
        assert!(probe.adapter.is_none());
    }
}
