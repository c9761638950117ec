//! A tuned model ready to answer: the one type an app embedding dmpo-burn needs.
//!
//! ```no_run
//! # fn main() -> Result<(), dmpo_infer::InferError> {
//! use dmpo_infer::TunedModel;
//! type B = burn::backend::NdArray;
//! let model = TunedModel::<B>::load("runs/default".as_ref(), &Default::default())?;
//! let image = image::open("shirt.png").map_err(|e| dmpo_infer::InferError::Input {
//!     input: "shirt.png".into(),
//!     reason: e.to_string(),
//! })?;
//! for p in model.classify(&[image])? {
//!     println!("{} ({:.2}) at exit {}, {} MACs", model.classes()[p.class], p.confidence, p.exit + 1, p.macs);
//! }
//! # Ok(())
//! # }
//! ```

use std::path::Path;

use burn::prelude::*;
use dmpo_model::dmpo::DmpoModel;
use image::DynamicImage;

use crate::transform::eval_transform;
use crate::{
    ExitPolicy, InferError, ModelBytes, ModelInfo, Prediction, load_model_bytes, load_model_dir,
    run_early_exit,
};

/// What [`TunedModel::from_bytes`] calls the embedded files in its errors.
const EMBEDDED: &str = "<embedded model>";

/// A tuned model (backbone, exits, trained add-ons) with its description: classes,
/// preprocessing and the exit thresholds calibrated for a compute budget.
#[derive(Debug, Clone)]
pub struct TunedModel<B: Backend> {
    pub info: ModelInfo,
    pub model: DmpoModel<B>,
    device: B::Device,
}

impl<B: Backend> TunedModel<B> {
    /// A model already in memory (say, just tuned) with its description, on `device`.
    pub fn new(info: ModelInfo, model: DmpoModel<B>, device: B::Device) -> Self {
        Self {
            info,
            model,
            device,
        }
    }

    /// Loads a model folder written by `train` (or [`crate::write_model_info`] and friends).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, InferError> {
        let (info, model) = load_model_dir(dir, device)?;
        Ok(Self {
            info,
            model,
            device: device.clone(),
        })
    }

    /// Loads a model from the bytes of its folder's files, e.g. `include_bytes!` in an app.
    pub fn from_bytes(bytes: ModelBytes<'_>, device: &B::Device) -> Result<Self, InferError> {
        let (info, model) = load_model_bytes(bytes, Path::new(EMBEDDED), device)?;
        Ok(Self {
            info,
            model,
            device: device.clone(),
        })
    }

    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Class names, indexed by [`Prediction::class`].
    pub fn classes(&self) -> &[String] {
        &self.info.classes
    }

    /// The exit thresholds saved with the model (calibrated by `train` or `calibrate`).
    pub fn policy(&self) -> Result<&ExitPolicy, InferError> {
        self.info.policy.as_ref().ok_or_else(|| {
            InferError::Policy(
                "this model has no exit thresholds yet; calibrate them for a compute budget \
                 first (`cargo xtask calibrate`, or dmpo_infer::calibrate)"
                    .into(),
            )
        })
    }

    /// The budget (fraction of the backbone's MACs) the saved thresholds were calibrated for.
    pub fn budget_fraction(&self) -> Option<f64> {
        self.info.budget_fraction
    }

    /// The model's input for `images`: each resized and centre-cropped as timm evaluates
    /// (shorter side to `input_size / crop_pct`, then the centre square; any size and aspect
    /// ratio is accepted), made 8-bit RGB (grey, grey + alpha, RGBA and 16-bit images are
    /// converted), then normalised: `[N, 3, S, S]`.
    pub fn input(&self, images: &[DynamicImage]) -> Result<Tensor<B, 4>, InferError> {
        if images.is_empty() {
            return Err(InferError::Input {
                input: "images".into(),
                reason: "no image given".into(),
            });
        }
        let p = &self.info.preprocess;
        let s = p.input_size;
        let pixels: Vec<f32> = images.iter().flat_map(|i| eval_transform(i, p)).collect();
        Ok(Tensor::from_data(
            TensorData::new(pixels, [images.len(), 3, s, s]),
            &self.device,
        ))
    }

    /// Classifies `images` with early exit under the saved thresholds: per image its class,
    /// confidence, the exit it left at and the MACs it cost, in input order.
    pub fn classify(&self, images: &[DynamicImage]) -> Result<Vec<Prediction>, InferError> {
        self.classify_with(images, self.policy()?)
    }

    /// [`Self::classify`] under another policy (e.g. one calibrated for another budget, or
    /// [`ExitPolicy::full_depth`]); one that does not fit this model is an error.
    pub fn classify_with(
        &self,
        images: &[DynamicImage],
        policy: &ExitPolicy,
    ) -> Result<Vec<Prediction>, InferError> {
        run_early_exit(&self.model, self.input(images)?, policy)
    }
}

/// An image from raw 8-bit pixels, row-major and interleaved: `channels` 1 (grey), 2 (grey +
/// alpha), 3 (RGB) or 4 (RGBA). A buffer whose length is not `width · height · channels` is an
/// error, not a panic.
pub fn image_from_pixels(
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    channels: u8,
) -> Result<DynamicImage, InferError> {
    let bad = |reason: String| InferError::Input {
        input: format!("{width}x{height} pixels, {channels} channels"),
        reason,
    };
    let expected = width as usize * height as usize * channels as usize;
    if width == 0 || height == 0 {
        return Err(bad("an image needs at least one pixel".into()));
    }
    if pixels.len() != expected {
        return Err(bad(format!(
            "{} bytes given, {expected} expected",
            pixels.len()
        )));
    }
    let image = match channels {
        1 => image::GrayImage::from_raw(width, height, pixels).map(DynamicImage::ImageLuma8),
        2 => image::GrayAlphaImage::from_raw(width, height, pixels).map(DynamicImage::ImageLumaA8),
        3 => image::RgbImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgb8),
        4 => image::RgbaImage::from_raw(width, height, pixels).map(DynamicImage::ImageRgba8),
        _ => return Err(bad("channels must be 1, 2, 3 or 4".into())),
    };
    image.ok_or_else(|| bad("the buffer does not fit the size".into()))
}
