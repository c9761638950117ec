//! The floor every tuned model must clear: multinomial logistic regression on the raw pixels.
//!
//! A tuned ViT that scores below a linear classifier on the pixels of the same training images
//! has learnt nothing worth its compute. This is that classifier, fitted the usual way (pixels
//! scaled to [0, 1], softmax cross-entropy with an L2 penalty on the weights, a convex problem
//! solved to convergence by full-batch Adam), its L2 strength chosen on a held-out part of the
//! training images, then refitted on all of them and measured on the test split.

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use dmpo_infer::data::{DataError, ImageDataset};

/// How the baseline is fitted.
#[derive(Config, Debug)]
pub struct PixelBaselineConfig {
    /// L2 strengths tried (penalty `λ/2·‖W‖²` added to the mean cross-entropy).
    #[config(default = "vec![1e-5, 1e-4, 1e-3, 1e-2]")]
    pub l2: Vec<f64>,
    /// Fraction of the training images held out to choose λ.
    #[config(default = 0.1)]
    pub held_out: f64,
    /// Full-batch Adam steps (the learning rate decays linearly to zero).
    #[config(default = 600)]
    pub steps: usize,
    #[config(default = 0.01)]
    pub lr: f64,
}

/// What the baseline measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PixelBaselineReport {
    /// λ chosen on the held-out images.
    pub l2: f64,
    /// Held-out accuracy of every λ tried, in the order of the config.
    pub held_out_accuracy: Vec<f64>,
    pub train_images: usize,
    pub test_images: usize,
    /// Accuracy on the test split of the model refitted on all training images with `l2`.
    pub test_accuracy: f64,
}

/// Every image's pixels in [0, 1], flattened (greyscale images give one value per pixel);
/// every image must have the size and channels of the first.
pub fn pixel_features(set: &ImageDataset) -> Result<(Vec<f32>, usize), DataError> {
    let mut features = Vec::new();
    let mut shape = None;
    for sample in &set.samples {
        let img = sample.image.load()?;
        let pixels: Vec<u8> = if img.color().has_color() {
            img.to_rgb8().into_raw()
        } else {
            img.to_luma8().into_raw()
        };
        let this = (img.width(), img.height(), pixels.len());
        match shape {
            None => shape = Some(this),
            Some(first) if first != this => {
                return Err(DataError::Format {
                    path: sample.image.describe().into(),
                    reason: format!(
                        "{}x{} with {} values, but the first image is {}x{} with {}: the pixel \
                         baseline needs images of one size",
                        this.0, this.1, this.2, first.0, first.1, first.2
                    ),
                });
            }
            Some(_) => {}
        }
        features.extend(pixels.into_iter().map(|p| f32::from(p) / 255.0));
    }
    Ok((features, shape.map_or(0, |s| s.2)))
}

fn tensors<B: Backend>(
    set: &ImageDataset,
    device: &B::Device,
) -> Result<(Tensor<B, 2>, Vec<usize>), DataError> {
    let (x, dim) = pixel_features(set)?;
    let n = set.samples.len();
    let labels = set.samples.iter().map(|s| s.label).collect();
    Ok((
        Tensor::from_data(TensorData::new(x, [n, dim]), device),
        labels,
    ))
}

/// Fits `x → labels` with penalty `l2`.
fn fit<B: AutodiffBackend>(
    x: Tensor<B, 2>,
    labels: &[usize],
    classes: usize,
    l2: f64,
    config: &PixelBaselineConfig,
) -> Linear<B::InnerBackend> {
    let device = x.device();
    let targets = Tensor::<B, 1, Int>::from_data(
        TensorData::new(labels.iter().map(|&l| l as i64).collect(), [labels.len()]),
        &device,
    );
    let [_, dim] = x.dims();
    let mut linear: Linear<B> = LinearConfig::new(dim, classes).init(&device);
    // Zero start: the optimum of a convex problem does not depend on it, and runs repeat exactly.
    linear.weight = linear.weight.map(|w| w.zeros_like().require_grad());
    linear.bias = linear
        .bias
        .map(|b| b.map(|b| b.zeros_like().require_grad()));
    let ce = CrossEntropyLossConfig::new().init(&device);
    let mut optim = AdamConfig::new().init();
    for step in 0..config.steps {
        let logits = linear.forward(x.clone());
        let penalty = linear.weight.val().powi_scalar(2).sum() * (l2 / 2.0);
        let loss = ce.forward(logits, targets.clone()) + penalty;
        let grads = GradientsParams::from_grads(loss.backward(), &linear);
        let lr = config.lr * (1.0 - step as f64 / config.steps as f64);
        linear = optim.step(lr, linear, grads);
    }
    linear.valid()
}

fn accuracy<B: Backend>(linear: &Linear<B>, x: Tensor<B, 2>, labels: &[usize]) -> f64 {
    let predicted = linear.forward(x).argmax(1).into_data();
    let right = predicted
        .iter::<i64>()
        .zip(labels)
        .filter(|(p, l)| *p as usize == **l)
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// Chooses λ on a held-out part of `train`, refits on all of `train`, measures on `test`.
pub fn pixel_baseline<B: AutodiffBackend>(
    train: &ImageDataset,
    test: &ImageDataset,
    config: &PixelBaselineConfig,
    device: &B::Device,
) -> Result<PixelBaselineReport, DataError> {
    let classes = train.num_classes();
    let mut fit_part = train.clone();
    let held = fit_part.split_off_held_out(config.held_out);
    let (x_fit, y_fit) = tensors::<B>(&fit_part, device)?;
    let (x_held, y_held) = tensors::<B::InnerBackend>(&held, device)?;
    let held_out_accuracy: Vec<f64> = config
        .l2
        .iter()
        .map(|&l2| {
            let model = fit(x_fit.clone(), &y_fit, classes, l2, config);
            accuracy(&model, x_held.clone(), &y_held)
        })
        .collect();
    // The first best λ (the list goes from weak to strong penalty).
    let best = held_out_accuracy
        .iter()
        .enumerate()
        .fold(0, |b, (i, &a)| if a > held_out_accuracy[b] { i } else { b });
    let l2 = config.l2[best];
    let (x_all, y_all) = tensors::<B>(train, device)?;
    let (x_test, y_test) = tensors::<B::InnerBackend>(test, device)?;
    let model = fit(x_all, &y_all, classes, l2, config);
    Ok(PixelBaselineReport {
        l2,
        held_out_accuracy,
        train_images: train.samples.len(),
        test_images: test.samples.len(),
        test_accuracy: accuracy(&model, x_test, &y_test),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::backend::{Autodiff, NdArray};
    use dmpo_infer::data::{ImageRef, Sample};
    use image::{DynamicImage, GrayImage};

    use super::*;

    /// Class c: a bright row at y = c on a noisy 8×8 background.
    fn bars(n: usize, seed: u32) -> ImageDataset {
        let samples = (0..n)
            .map(|i| {
                let c = i % 4;
                let img = GrayImage::from_fn(8, 8, |x, y| {
                    let noise = (x * 7 + y * 13 + i as u32 * 31 + seed) % 60;
                    image::Luma([if y as usize == c { 200 } else { noise as u8 }])
                });
                Sample {
                    image: ImageRef::Memory(Arc::new(DynamicImage::ImageLuma8(img))),
                    label: c,
                }
            })
            .collect();
        ImageDataset {
            samples,
            classes: (0..4).map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn a_linearly_separable_task_is_learnt_and_lambda_is_chosen_from_the_grid() {
        let config = PixelBaselineConfig::new().with_steps(200);
        let report = pixel_baseline::<Autodiff<NdArray>>(
            &bars(80, 0),
            &bars(40, 5),
            &config,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(report.test_accuracy, 1.0, "{report:?}");
        assert_eq!(report.held_out_accuracy.len(), config.l2.len());
        assert!(config.l2.contains(&report.l2));
        assert_eq!((report.train_images, report.test_images), (80, 40));
        // A zero start: the same data gives the same fit, run after run.
        let again = pixel_baseline::<Autodiff<NdArray>>(
            &bars(80, 0),
            &bars(40, 5),
            &config,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(again.held_out_accuracy, report.held_out_accuracy);
    }

    #[test]
    fn images_of_another_size_are_refused() {
        let mut set = bars(4, 0);
        set.samples.push(Sample {
            image: ImageRef::Memory(Arc::new(DynamicImage::ImageLuma8(GrayImage::new(9, 8)))),
            label: 0,
        });
        let msg = pixel_features(&set).unwrap_err().to_string();
        assert!(msg.contains("9x8") && msg.contains("one size"), "{msg}");
    }
}
