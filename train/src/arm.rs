//! The methods a comparison trains on the same backbone, data and seeds: DMPO, the plain
//! multi-exit baseline, and the two single-exit references the paper's claims are measured
//! against (what adapters give without exits, and what the frozen features give alone).

use dmpo_model::dmpo::{AdapterConfig, DmpoConfig};
use dmpo_model::dyt::DispatchConfig;

use crate::LossSchedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// DyT (Dynamic Tuning): adapters, a token dispatcher per block, one exit after the last.
    Dyt,
    /// DMPO's exits with DyT's token dispatch in the trunk.
    #[serde(rename = "dmpo+dyt")]
    DmpoDyt,
}

impl Arm {
    /// Every arm, in the order tables list them.
    pub const ALL: [Arm; 6] = [
        Arm::Dmpo,
        Arm::Baseline,
        Arm::LastExit,
        Arm::LinearProbe,
        Arm::Dyt,
        Arm::DmpoDyt,
    ];

    /// The name on the command line: `dmpo`, `baseline`, `last-exit`, `linear-probe`, `dyt`,
    /// `dmpo+dyt`.
    pub fn key(self) -> &'static str {
        match self {
            Arm::Dmpo => "dmpo",
            Arm::Baseline => "baseline",
            Arm::LastExit => "last-exit",
            Arm::LinearProbe => "linear-probe",
            Arm::Dyt => "dyt",
            Arm::DmpoDyt => "dmpo+dyt",
        }
    }

    /// The name in reports and tables.
    pub fn name(self) -> &'static str {
        match self {
            Arm::Dmpo => "DMPO",
            Arm::Baseline => "baseline",
            Arm::LastExit => "last exit",
            Arm::LinearProbe => "linear probe",
            Arm::Dyt => "DyT",
            Arm::DmpoDyt => "DMPO+DyT",
        }
    }

    /// The output sub-directory: the key, with no `+` in a file name.
    pub fn dir(self) -> &'static str {
        match self {
            Arm::DmpoDyt => "dmpo-dyt",
            other => other.key(),
        }
    }

    /// Whether the arm has early exits (and so an accuracy-vs-cost curve).
    pub fn exits_early(self) -> bool {
        matches!(self, Arm::Dmpo | Arm::Baseline | Arm::DmpoDyt)
    }

    /// Whether DMPO's parts (bypasses, covariance heads, two-phase weights) are in.
    fn is_dmpo(self) -> bool {
        matches!(self, Arm::Dmpo | Arm::DmpoDyt)
    }

    /// Whether the blocks dispatch tokens (DyT).
    pub fn dispatches(self) -> bool {
        matches!(self, Arm::Dyt | Arm::DmpoDyt)
    }

    /// Whether self-distillation into early exits applies.
    pub fn distills(self) -> bool {
        self.is_dmpo()
    }

    /// The model for `classes` classes on a backbone of `depth` blocks, given the exits,
    /// adapters and token dispatch the arms use.
    pub fn model_config(
        self,
        classes: usize,
        depth: usize,
        exits: &[usize],
        adapter: AdapterConfig,
        dispatch: DispatchConfig,
    ) -> DmpoConfig {
        let mut config = if self.is_dmpo() {
            DmpoConfig::new(classes)
        } else {
            DmpoConfig::baseline(classes)
        };
        config.dispatch = self.dispatches().then_some(dispatch);
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
        if self.is_dmpo() {
            LossSchedule::new()
        } else {
            LossSchedule::uniform()
        }
    }
}

impl std::str::FromStr for Arm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Arm::ALL.into_iter().find(|a| a.key() == s).ok_or_else(|| {
            let keys: Vec<&str> = Arm::ALL.iter().map(|a| a.key()).collect();
            format!("`{s}` is not a method; choose one of {}", keys.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm_parses_back_from_its_key() {
        for arm in Arm::ALL {
            assert_eq!(arm.key().parse::<Arm>(), Ok(arm));
        }
        let err = "dmpo-dyt".parse::<Arm>().unwrap_err();
        assert!(err.contains("dmpo+dyt"), "{err}");
    }

    #[test]
    fn single_exit_arms_keep_one_exit_and_the_probe_has_no_adapters() {
        let config = |arm: Arm| {
            arm.model_config(
                10,
                12,
                &[3, 6, 12],
                AdapterConfig::new(),
                DispatchConfig::new(),
            )
        };
        let dmpo = config(Arm::Dmpo);
        assert_eq!(dmpo.exits, vec![3, 6, 12]);
        assert!(dmpo.bypass.is_some() && dmpo.adapter.is_some() && dmpo.dispatch.is_none());
        let base = config(Arm::Baseline);
        assert!(base.bypass.is_none() && base.adapter.is_some());
        let last = config(Arm::LastExit);
        assert_eq!(last.exits, vec![12]);
        assert!(last.adapter.is_some());
        let probe = config(Arm::LinearProbe);
        assert_eq!(probe.exits, vec![12]);
        assert!(probe.adapter.is_none());
        let dyt = config(Arm::Dyt);
        assert_eq!(dyt.exits, vec![12]);
        assert!(dyt.dispatch.is_some() && dyt.adapter.is_some());
        let both = config(Arm::DmpoDyt);
        assert_eq!(both.exits, vec![3, 6, 12]);
        assert!(both.dispatch.is_some() && both.bypass.is_some());
    }
}
