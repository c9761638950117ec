//! Images cut into patch rows for Flex: one copy of each patch row, image by image.
//!
//! Burn composes it as a reshape and a six-dimensional permute, which Flex makes contiguous
//! element by element through its strided iterator: 1.0 ms of the demo model's 1.5 ms
//! embedding at batch 64 (docs/benchmarks.md), for a copy of 600 KB. Here each patch row of
//! each channel is one short copy, unrolled for the usual patch sides.

use std::mem::MaybeUninit;

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
    let cut = Cut { c, h, w, p, gw };
    // Written in full below, patch row by patch row.
    let mut out: Vec<f32> = Vec::with_capacity(b * per_image);
    if per_image > 0 {
        out.spare_capacity_mut()
            .par_chunks_mut(per_image)
            .zip(src.par_chunks(per_image))
            .for_each(|(dst, image)| match p {
                // The common patch sides as constants: each patch row is then a few moves, not
                // a call to `memcpy` (a 4-float row at a time, that call was most of the cut).
                4 => cut.image::<4>(image, dst),
                8 => cut.image::<8>(image, dst),
                14 => cut.image::<14>(image, dst),
                16 => cut.image::<16>(image, dst),
                _ => cut.image::<0>(image, dst),
            });
    }
    // SAFETY: `Cut::image` wrote every element of every image's chunk, which cover `out`.
    unsafe { out.set_len(b * per_image) };
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from([b, gh * gw, c * p * p])),
        DType::F32,
    ))
}

/// One image's geometry.
struct Cut {
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    /// Patches per row of the grid.
    gw: usize,
}

impl Cut {
    /// `image` (`[C, H, W]`) → its patch rows in `dst` (`[(H/P)·(W/P), C·P·P]`, all written);
    /// `P` is the patch side as a constant, or 0 for "read it from `self.p`".
    #[inline(always)]
    fn image<const P: usize>(&self, image: &[f32], dst: &mut [MaybeUninit<f32>]) {
        let Cut { c, h, w, p, gw } = *self;
        let p = if P == 0 { p } else { P };
        for (index, token) in dst.chunks_exact_mut(c * p * p).enumerate() {
            let (py, px) = (index / gw, index % gw);
            for (row, out_row) in token.chunks_exact_mut(p).enumerate() {
                let (ch, ky) = (row / p, row % p);
                let start = ch * h * w + (py * p + ky) * w + px * p;
                for (o, &v) in out_row.iter_mut().zip(&image[start..start + p]) {
                    o.write(v);
                }
            }
        }
    }
}
