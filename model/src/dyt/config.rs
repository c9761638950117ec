use burn::config::Config;

/// DyT's token dispatch and its training losses, with the public code's defaults
/// (`../shared/dyt-notes.md` §3): `L = CE(dispatched) + CE(complete) + KL(complete ‖
/// dispatched) + 2 (mean m − r)²`.
#[derive(Config, Debug, PartialEq)]
pub struct DispatchConfig {
    /// Target activation rate r: the share of patch tokens that go through the MLPs.
    #[config(default = 0.5)]
    pub token_rate: f64,
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

impl DispatchConfig {
    /// A message a user can act on when a setting is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.token_rate > 0.0 && self.token_rate <= 1.0) {
            return Err(format!(
                "token rate {} is outside (0, 1]: it is the share of patch tokens the MLPs keep",
                self.token_rate
            ));
        }
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
        assert!(DispatchConfig::new().validate().is_ok());
        for rate in [0.0, -0.1, 1.5, f64::NAN] {
            let err = DispatchConfig::new()
                .with_token_rate(rate)
                .validate()
                .unwrap_err();
            assert!(err.contains("token rate"), "{err}");
        }
        assert!(
            DispatchConfig::new()
                .with_temperature(0.0)
                .validate()
                .is_err()
        );
    }
}
