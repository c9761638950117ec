//! Images cut into patch rows for Flex: one copy of each patch row, image by image.
//!
//! Burn composes it as a reshape and a six-dimensional permute, which Flex makes contiguous
//! element by element through its strided iterator: 1.0 ms of the demo model's 1.5 ms
//! embedding at batch 64 (docs/benchmarks.md), for a copy of 600 KB. Here each patch row of
//! each channel is one `copy_from_slice`.

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

/// `[B, C, H, W]` → `[B, (H/P)·(W/P), C·P·P]` as [`dmpo_model::kernels::patchify`]; `None`
/// (declined) for other dtypes, ranks or sides that are not multiples of `patch`.
pub fn patchify(images: &FlexTensor, patch: usize) -> Option<FlexTensor> {
    let shape = images.layout().shape();
    if images.dtype() != DType::F32 || shape.num_dims() != 4 || patch == 0 {
        return None;
    }
    let (b, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    if h % patch != 0 || w % patch != 0 {
        return None;
    }
    let p = patch;
    let (gh, gw) = (h / p, w / p);
    let images = images.to_contiguous();
    let src = images.as_slice::<f32>()?;
    let per_image = c * h * w;
    let mut out = vec![0.0f32; b * per_image];
    if per_image > 0 {
        out.par_chunks_mut(per_image)
            .zip(src.par_chunks(per_image))
            .for_each(|(dst, image)| {
                for (index, token) in dst.chunks_exact_mut(c * p * p).enumerate() {
                    let (py, px) = (index / gw, index % gw);
                    for (row, out_row) in token.chunks_exact_mut(p).enumerate() {
                        let (ch, ky) = (row / p, row % p);
                        let start = ch * h * w + (py * p + ky) * w + px * p;
                        out_row.copy_from_slice(&image[start..start + p]);
                    }
                }
            });
    }
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from([b, gh * gw, c * p * p])),
        DType::F32,
    ))
}
