//! timm's `resample_abs_pos_embed`: bicubic interpolation of the position-embedding grid when a
//! model runs at another resolution than it was trained at.
//!
//! timm calls `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`. PyTorch's
//! antialiased path is PIL's separable resampling with the cubic kernel at a = -0.5, weights
//! normalised per output pixel and truncated (not clamped) at the borders; reproduced here.

/// Cubic convolution kernel with a = -0.5 (PIL / PyTorch antialias).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index: the first input index and the weights of the inputs it reads.
fn weights_1d(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let support = 2.0 * scale.max(1.0);
    let inv = 1.0 / scale.max(1.0);
    (0..output)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as isize).max(0) as usize;
            let hi = ((center + support + 0.5) as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (lo, w)
        })
        .collect()
}

/// Resamples a `[old × old × dim]` grid (row-major, channels last) to `[new × new × dim]`.
pub fn resample_grid(grid: &[f32], old: usize, new: usize, dim: usize) -> Vec<f32> {
    assert_eq!(grid.len(), old * old * dim, "grid size");
    let wy = weights_1d(old, new);
    // Horizontal pass: [old, new, dim], then vertical: [new, new, dim]; f64 accumulators.
    let mut horizontal = vec![0f64; old * new * dim];
    for y in 0..old {
        for (x, (lo, w)) in wy.iter().enumerate() {
            let out = &mut horizontal[(y * new + x) * dim..][..dim];
            for (k, wk) in w.iter().enumerate() {
                let src = &grid[(y * old + lo + k) * dim..][..dim];
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, s)| *o += wk * *s as f64);
            }
        }
    }
    let mut result = vec![0f32; new * new * dim];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..new {
            let out = &mut result[(y * new + x) * dim..][..dim];
            let mut acc = vec![0f64; dim];
            for (k, wk) in w.iter().enumerate() {
                let src = &horizontal[((lo + k) * new + x) * dim..][..dim];
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
    old: usize,
    new: usize,
    dim: usize,
) -> Vec<f32> {
    let (head, grid) = pos.split_at(prefix * dim);
    let mut out = head.to_vec();
    out.extend(resample_grid(grid, old, new, dim));
    out
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
        for new in [2, 7] {
            let out = resample_grid(&grid, 4, new, 3);
            assert!(
                out.iter().all(|v| (v - 0.25).abs() < 1e-6),
                "{new}: {out:?}"
            );
        }
    }
}
