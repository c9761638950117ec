use burn::config::Config;

/// DyT's token dispatch in the model: a dispatcher per block, trained to let a share `r` of the
/// patch tokens through each MLP (`../shared/dyt-notes.md` §3). How it is trained (the
/// Gumbel-sigmoid temperature, the loss weights) is the trainer's business: `dmpo_train::DytLoss`.
#[derive(Config, Debug, PartialEq)]
pub struct DispatchConfig {
    /// Target activation rate r: the share of patch tokens that go through the MLPs; what the
    /// dispatchers were trained for, recorded with the model.
    #[config(default = 0.5)]
    pub token_rate: f64,
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
    }
}
