//! Formula-driven synthetic images for pretraining the embedded demo backbone, in the spirit of
//! FractalDB: every class is a mathematical pattern family with fixed parameters, every image a
//! random instance (phase, position, contrast, colours, noise). No download, no natural images,
//! and nothing in common with the demo task's clothing photographs.

use std::f32::consts::PI;
use std::sync::Arc;

use dmpo_infer::data::{ImageDataset, ImageRef, Sample};
use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Number of pattern classes: 4 families × 16 parameter settings.
pub const SYNTHETIC_CLASSES: usize = 64;

/// The pattern value in [0, 1] of class `class` at (u, v) ∈ [-1, 1]², with per-image `phase`.
fn pattern(class: usize, u: f32, v: f32, phase: f32) -> f32 {
    let (family, k) = (class / 16, class % 16);
    let s = match family {
        // Gratings: 8 orientations × 2 frequencies.
        0 => {
            let theta = (k % 8) as f32 * PI / 8.0;
            let freq = [3.0, 6.0][k / 8];
            (freq * PI * (u * theta.cos() + v * theta.sin()) + phase).sin()
        }
        // Rings: 4 frequencies × 4 centres.
        1 => {
            let (cx, cy) = [(-0.4, -0.4), (0.4, -0.4), (-0.4, 0.4), (0.4, 0.4)][k % 4];
            let r = ((u - cx).powi(2) + (v - cy).powi(2)).sqrt();
            ((2.0 + 2.0 * (k / 4) as f32) * PI * r + phase).sin()
        }
        // Spokes: 8 counts × straight or twisted.
        2 => {
            let n = 3.0 + (k % 8) as f32;
            let twist = if k < 8 { 0.0 } else { 4.0 };
            let (r, a) = ((u * u + v * v).sqrt(), v.atan2(u));
            (n * a + twist * r + phase).sin()
        }
        // Checkerboards: 4 cell sizes × 4 rotations.
        _ => {
            let cells = [2.0, 3.0, 4.0, 6.0][k % 4];
            let theta = (k / 4) as f32 * PI / 8.0;
            let (x, y) = (
                u * theta.cos() - v * theta.sin(),
                u * theta.sin() + v * theta.cos(),
            );
            let cx = (cells * (x + 1.0) + phase).floor() as i64;
            let cy = (cells * (y + 1.0)).floor() as i64;
            if (cx + cy).rem_euclid(2) == 0 {
                1.0
            } else {
                -1.0
            }
        }
    };
    0.5 + 0.5 * s
}

/// A random instance of `class` at `size`×`size`.
pub fn render(class: usize, size: u32, rng: &mut impl Rng) -> RgbImage {
    let phase = rng.random_range(0.0..2.0 * PI);
    let (dx, dy) = (rng.random_range(-0.2..0.2), rng.random_range(-0.2..0.2));
    let zoom = rng.random_range(0.8..1.25f32);
    let contrast = rng.random_range(0.5..1.0f32);
    let fg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
    let bg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..1.0));
    let noise = rng.random_range(0.0..0.08f32);
    let mut img = RgbImage::new(size, size);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let u = ((x as f32 + 0.5) / size as f32 * 2.0 - 1.0) * zoom + dx;
        let v = ((y as f32 + 0.5) / size as f32 * 2.0 - 1.0) * zoom + dy;
        let t = 0.5 + contrast * (pattern(class, u, v, phase) - 0.5);
        for c in 0..3 {
            let value = bg[c] + (fg[c] - bg[c]) * t + noise * rng.random_range(-1.0..1.0f32);
            px[c] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    img
}

/// `per_class` images of every class, reproducible from `seed`.
pub fn synthetic_dataset(per_class: usize, size: u32, seed: u64) -> ImageDataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let samples = (0..per_class * SYNTHETIC_CLASSES)
        .map(|i| {
            let label = i % SYNTHETIC_CLASSES;
            let img = render(label, size, &mut rng);
            Sample {
                image: ImageRef::Memory(Arc::new(DynamicImage::ImageRgb8(img))),
                label,
            }
        })
        .collect();
    ImageDataset {
        samples,
        classes: (0..SYNTHETIC_CLASSES)
            .map(|c| format!("pattern-{c}"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_is_reproducible_and_classes_differ() {
        let a = synthetic_dataset(2, 16, 7);
        let b = synthetic_dataset(2, 16, 7);
        assert_eq!(a.samples.len(), 128);
        let pixels =
            |d: &ImageDataset, i: usize| d.samples[i].image.load().unwrap().to_rgb8().into_raw();
        assert_eq!(pixels(&a, 5), pixels(&b, 5));
        assert_ne!(pixels(&a, 5), pixels(&a, 6));
    }
}
