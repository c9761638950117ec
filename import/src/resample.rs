//! timm's `resample_abs_pos_embed`: bicubic interpolation of the position-embedding grid when a
//! model runs at another resolution than it was trained at.
//!
//! timm calls `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`. PyTorch's
//! antialiased path is PIL's separable resampling with the cubic kernel at a = -0.5, weights
//! normalised per output pixel and truncated (not clamped) at the borders; reproduced here.
//! Hugging Face's DINOv2 (and so its ONNX exports, as a `Resize` node) interpolates without
//! antialiasing: the plain 4-tap cubic kernel at a = -0.75 with indices clamped at the borders.

use serde::{Deserialize, Serialize};

/// How a position-embedding grid is resampled to another size.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Resampling {
    /// timm's `resample_abs_pos_embed`: antialiased bicubic (PIL's kernel, a = -0.5).
    #[default]
    Antialiased,
    /// `F.interpolate(mode="bicubic", antialias=False, align_corners=False)`, which is also
    /// ONNX `Resize` with `mode=cubic`, `coordinate_transformation_mode=half_pixel`: four taps of
    /// the cubic kernel with coefficient `a` (PyTorch: -0.75), border indices clamped.
    Bicubic { a: f64 },
}

impl Resampling {
    /// PyTorch's `antialias=False` bicubic.
    pub const TORCH_BICUBIC: Resampling = Resampling::Bicubic { a: -0.75 };
}

/// Cubic convolution kernel with coefficient `a` (-0.5: PIL / PyTorch antialias; -0.75:
/// PyTorch's and ONNX's plain bicubic).
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// For each output index: the input indices it reads and their weights.
type Taps = Vec<Vec<(usize, f64)>>;

/// Antialiased taps: the kernel widened by the downscale factor, normalised per output.
fn antialiased_taps(input: usize, output: usize) -> Taps {
    let scale = input as f64 / output as f64;
    let support = 2.0 * scale.max(1.0);
    let inv = 1.0 / scale.max(1.0);
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as isize).max(0) as usize;
            let hi = ((center + support + 0.5) as usize).min(input);
            let mut w: Vec<(usize, f64)> = (lo..hi)
                .map(|j| (j, cubic((j as f64 - center + 0.5) * inv, -0.5)))
                .collect();
            let total: f64 = w.iter().map(|(_, v)| v).sum();
            if total != 0.0 {
                w.iter_mut().for_each(|(_, v)| *v /= total);
            }
            w
        })
        .collect()
}

/// Plain bicubic taps (half-pixel centres, four inputs, indices clamped to the grid).
fn bicubic_taps(input: usize, output: usize, a: f64) -> Taps {
    let scale = input as f64 / output as f64;
    let last = input as isize - 1;
    (0..output)
        .map(|i| {
            let src = (i as f64 + 0.5) * scale - 0.5;
            let x0 = src.floor();
            let t = src - x0;
            let weights = [
                cubic(t + 1.0, a),
                cubic(t, a),
                cubic(1.0 - t, a),
                cubic(2.0 - t, a),
            ];
            weights
                .iter()
                .enumerate()
                .map(|(k, &w)| (((x0 as isize) - 1 + k as isize).clamp(0, last) as usize, w))
                .collect()
        })
        .collect()
}

/// Resamples a `[old × old × dim]` grid (row-major, channels last) to `[new × new × dim]`,
/// as timm does.
pub fn resample_grid(grid: &[f32], old: usize, new: usize, dim: usize) -> Vec<f32> {
    resample_grid_with(grid, old, new, dim, Resampling::Antialiased)
}

/// Resamples a `[old × old × dim]` grid (row-major, channels last) to `[new × new × dim]`.
pub fn resample_grid_with(
    grid: &[f32],
    old: usize,
    new: usize,
    dim: usize,
    mode: Resampling,
) -> Vec<f32> {
    assert_eq!(grid.len(), old * old * dim, "grid size");
    let wy = match mode {
        Resampling::Antialiased => antialiased_taps(old, new),
        Resampling::Bicubic { a } => bicubic_taps(old, new, a),
    };
    // Horizontal pass: [old, new, dim], then vertical: [new, new, dim]; f64 accumulators.
    let mut horizontal = vec![0f64; old * new * dim];
    for y in 0..old {
        for (x, taps) in wy.iter().enumerate() {
            let out = &mut horizontal[(y * new + x) * dim..][..dim];
            for (j, wk) in taps {
                let src = &grid[(y * old + j) * dim..][..dim];
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, s)| *o += wk * *s as f64);
            }
        }
    }
    let mut result = vec![0f32; new * new * dim];
    for (y, taps) in wy.iter().enumerate() {
        for x in 0..new {
            let out = &mut result[(y * new + x) * dim..][..dim];
            let mut acc = vec![0f64; dim];
            for (j, wk) in taps {
                let src = &horizontal[(j * new + x) * dim..][..dim];
                acc.iter_mut().zip(src).for_each(|(a, s)| *a += wk * s);
            }
            out.iter_mut().zip(acc).for_each(|(o, a)| *o = a as f32);
        }
    }
    result
}

/// Resamples a position embedding `[1, prefix + old², dim]` to `[1, prefix + new², dim]`,
/// leaving the prefix (class token) positions as they are.
pub fn resample_pos_embed(
    pos: &[f32],
    prefix: usize,
    (old, new): (usize, usize),
    dim: usize,
    mode: Resampling,
) -> Vec<f32> {
    let (head, grid) = pos.split_at(prefix * dim);
    let mut out = head.to_vec();
    out.extend(resample_grid_with(grid, old, new, dim, mode));
    out
}

/// The side of a square grid of `n` positions, if `n` is a (non-zero) square.
pub(crate) fn square_side(n: usize) -> Option<usize> {
    let g = (n as f64).sqrt().round() as usize;
    (g > 0 && g * g == n).then_some(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let grid: Vec<f32> = (0..3 * 3 * 2).map(|v| v as f32).collect();
        assert_eq!(resample_grid(&grid, 3, 3, 2), grid);
    }

    #[test]
    fn constant_grid_stays_constant() {
        let grid = vec![0.25f32; 4 * 4 * 3];
        for mode in [Resampling::Antialiased, Resampling::TORCH_BICUBIC] {
            for new in [2, 7] {
                let out = resample_grid_with(&grid, 4, new, 3, mode);
                assert!(
                    out.iter().all(|v| (v - 0.25).abs() < 1e-6),
                    "{mode:?} {new}: {out:?}"
                );
            }
        }
    }

    #[test]
    fn plain_bicubic_matches_torch_interpolate() {
        // torch.nn.functional.interpolate(torch.arange(16.).reshape(1, 1, 4, 4), size=(3, 3),
        //     mode="bicubic", align_corners=False, antialias=False)
        let grid: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = resample_grid_with(&grid, 4, 3, 1, Resampling::TORCH_BICUBIC);
        let torch = [
            0.630_786_8,
            2.004_629_6,
            3.378_473,
            6.126_158,
            7.5,
            8.873_844,
            11.621_531,
            12.995_373,
            14.369_219,
        ];
        for (o, t) in out.iter().zip(torch) {
            assert!((o - t).abs() < 1e-5, "{out:?}");
        }
    }
}
