//! timm's image preprocessing: evaluation resize + centre crop, training random resized crop +
//! horizontal flip; greyscale, RGBA and 16-bit images become 8-bit RGB; then mean/std
//! normalisation into a CHW float buffer.

use dmpo_model::Preprocess;
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use rand::Rng;

/// Training augmentation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Smallest area fraction of a random resized crop (timm: 0.08); 1.0 turns cropping off.
    pub min_scale: f64,
    pub hflip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            min_scale: 0.08,
            hflip: true,
        }
    }
}

/// Evaluation: shorter side to `input_size / crop_pct` (bicubic), centre crop `input_size`.
pub fn eval_transform(img: &DynamicImage, p: &Preprocess) -> Vec<f32> {
    let size = p.input_size as u32;
    let rgb = centre_of_elongated(img.to_rgb8());
    let scale_to = ((p.input_size as f64 / p.crop_pct).floor() as u32).max(size);
    let (w, h) = rgb.dimensions();
    let (nw, nh) = if w <= h {
        (
            scale_to,
            (f64::from(h) * f64::from(scale_to) / f64::from(w)).round() as u32,
        )
    } else {
        (
            (f64::from(w) * f64::from(scale_to) / f64::from(h)).round() as u32,
            scale_to,
        )
    };
    let resized = if (nw, nh) == (w, h) {
        rgb
    } else {
        image::imageops::resize(&rgb, nw, nh, FilterType::CatmullRom)
    };
    let (x, y) = ((nw - size) / 2, (nh - size) / 2);
    let cropped = image::imageops::crop_imm(&resized, x, y, size, size).to_image();
    normalise(&cropped, p)
}

/// Longest side kept, as a multiple of the shorter one, before the evaluation resize.
const MAX_ASPECT: u32 = 16;

/// A very elongated image (say 60 000 × 2) would be resized whole into a strip of billions of
/// pixels before its centre is cropped. Cut the centre first, keeping [`MAX_ASPECT`] times the
/// short side: far more than the square crop uses, so the result is unchanged (up to the
/// rounding of the centre) and ordinary images are not touched at all.
fn centre_of_elongated(rgb: RgbImage) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let keep = |short: u32| short.max(1).saturating_mul(MAX_ASPECT);
    if w > keep(h) {
        let k = keep(h);
        image::imageops::crop_imm(&rgb, (w - k) / 2, 0, k, h).to_image()
    } else if h > keep(w) {
        let k = keep(w);
        image::imageops::crop_imm(&rgb, 0, (h - k) / 2, w, k).to_image()
    } else {
        rgb
    }
}

/// Training: random resized crop (area fraction in [min_scale, 1], aspect in [3/4, 4/3]) to
/// `input_size`, then a horizontal flip half the time.
pub fn train_transform(
    img: &DynamicImage,
    p: &Preprocess,
    aug: &Augment,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let size = p.input_size as u32;
    let area = f64::from(w) * f64::from(h);
    let mut crop = (0, 0, w, h);
    if aug.min_scale < 1.0 {
        for _ in 0..10 {
            let target = area * rng.random_range(aug.min_scale..=1.0);
            let log_ratio = rng.random_range((3f64 / 4.0).ln()..=(4f64 / 3.0).ln());
            let ratio = log_ratio.exp();
            let cw = (target * ratio).sqrt().round() as u32;
            let ch = (target / ratio).sqrt().round() as u32;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                crop = (
                    rng.random_range(0..=w - cw),
                    rng.random_range(0..=h - ch),
                    cw,
                    ch,
                );
                break;
            }
        }
    }
    let patch = image::imageops::crop_imm(&rgb, crop.0, crop.1, crop.2, crop.3).to_image();
    let mut out = image::imageops::resize(&patch, size, size, FilterType::CatmullRom);
    if aug.hflip && rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    normalise(&out, p)
}

/// `[3, H, W]` floats, `(pixel / 255 − mean) / std` per channel.
pub fn normalise(img: &RgbImage, p: &Preprocess) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - p.mean[c]) / p.std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grey_images_become_three_equal_channels_at_the_input_size() {
        let grey = DynamicImage::ImageLuma8(image::GrayImage::from_fn(28, 28, |x, _| {
            image::Luma([x as u8 * 9])
        }));
        let p = Preprocess::new(32).with_crop_pct(1.0);
        let out = eval_transform(&grey, &p);
        assert_eq!(out.len(), 3 * 32 * 32);
        assert_eq!(&out[..1024], &out[1024..2048]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let out = train_transform(&grey, &p, &Augment::default(), &mut rng);
        assert_eq!(out.len(), 3 * 32 * 32);
    }

    #[test]
    fn an_extremely_elongated_image_is_cropped_before_it_is_resized() {
        // Resized whole, this would be a strip of almost two gigapixels.
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(60_000, 2, image::Rgb([9, 9, 9])));
        let p = Preprocess::new(224);
        let x = eval_transform(&img, &p);
        assert_eq!(x.len(), 3 * 224 * 224);
        // And a moderately wide one is untouched by the guard.
        let wide = RgbImage::from_pixel(160, 10, image::Rgb([1, 2, 3]));
        assert_eq!(centre_of_elongated(wide.clone()), wide);
    }

    #[test]
    fn eval_transform_centre_crops_after_resizing_the_shorter_side() {
        // 40x20, crop_pct 0.5 to 10: shorter side → 20 (no resize), width 40, centre 10x10 crop.
        let img = RgbImage::from_fn(40, 20, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let p = Preprocess::new(10)
            .with_crop_pct(0.5)
            .with_mean([0.0; 3])
            .with_std([1.0; 3]);
        let out = eval_transform(&DynamicImage::ImageRgb8(img), &p);
        assert_eq!(out[0] * 255.0, 15.0); // x offset (40 - 10) / 2
        assert_eq!(out[100] * 255.0, 5.0); // y offset (20 - 10) / 2, green channel
    }
}
