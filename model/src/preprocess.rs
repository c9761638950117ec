use burn::config::Config;

/// How images must be prepared for a backbone (timm's `pretrained_cfg`): the model is only right
/// on inputs normalised the way it was trained, so this travels with every saved model.
#[derive(Config, Debug, PartialEq)]
pub struct Preprocess {
    /// Square side of the network input, in pixels.
    pub input_size: usize,
    /// Per-channel mean of the 0..1 RGB input.
    #[config(default = "[0.5, 0.5, 0.5]")]
    pub mean: [f32; 3],
    #[config(default = "[0.5, 0.5, 0.5]")]
    pub std: [f32; 3],
    /// Evaluation resize: shorter side to `input_size / crop_pct`, then a centre crop.
    #[config(default = 0.9)]
    pub crop_pct: f64,
}

impl Preprocess {
    /// ImageNet statistics, used by DeiT and many timm checkpoints.
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

    /// Checks the values a hand-edited file could get wrong: a zero std would turn every input
    /// into infinities, a crop fraction outside (0, 1] would crop outside the image.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 {
            return Err("preprocess.input_size must be at least 1".into());
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(format!("preprocess.mean {:?} must be finite", self.mean));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "preprocess.std {:?} must be finite and above 0",
                self.std
            ));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(format!(
                "preprocess.crop_pct {} must be in (0, 1]",
                self.crop_pct
            ));
        }
        Ok(())
    }
}
