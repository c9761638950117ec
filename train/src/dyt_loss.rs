//! How DyT's dispatchers are trained, with the public code's defaults (`../shared/dyt-notes.md`
//! §3): `L = CE(dispatched) + CE(complete) + KL(complete ‖ dispatched) + 2 (mean m − r)²`, the
//! gates sampled by a Gumbel-sigmoid. The target rate r is the model's
//! (`dmpo_model::dyt::DispatchConfig`); these are the trainer's.

use burn::config::Config;

#[derive(Config, Debug, PartialEq)]
pub struct DytLoss {
    /// Temperature τ of the Gumbel-sigmoid gate (constant, as the public code runs it).
    #[config(default = 5.0)]
    pub temperature: f64,
    /// Weight of the activation-rate loss `(mean m − r)²`.
    #[config(default = 2.0)]
    pub rate_weight: f64,
    /// Weight of the complete model's cross-entropy.
    #[config(default = 1.0)]
    pub complete_weight: f64,
    /// Weight of the KL distillation from the complete model to the dispatched one.
    #[config(default = 1.0)]
    pub distill_weight: f64,
}

impl DytLoss {
    /// A message a user can act on when a setting is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "gate temperature {} must be positive",
                self.temperature
            ));
        }
        for (name, w) in [
            ("rate", self.rate_weight),
            ("complete", self.complete_weight),
            ("distill", self.distill_weight),
        ] {
            if !(w >= 0.0 && w.is_finite()) {
                return Err(format!(
                    "{name} loss weight {w} must be a finite number ≥ 0"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(DytLoss::new().validate().is_ok());
        assert!(DytLoss::new().with_temperature(0.0).validate().is_err());
        let err = DytLoss::new()
            .with_rate_weight(-1.0)
            .validate()
            .unwrap_err();
        assert!(err.contains("rate loss weight"), "{err}");
    }
}
