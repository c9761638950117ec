//! The tokens entering a ViT's first block, in one pass for Flex.
//!
//! Composed, the class (and register) tokens are broadcast over the batch, concatenated in
//! front of the patches (a copy of every token) and the position embedding added (a second
//! pass): two of the demo model's four microseconds of embedding per image, a cost every
//! image pays however early it leaves. Here each image's tokens are written once, each as
//! its source plus its position row: the same additions, so the same bits.

use std::mem::MaybeUninit;

use burn::tensor::{Bytes, DType, Shape};
use burn_flex::{FlexTensor, Layout};
use dmpo_model::kernels::TokensInput;
use rayon::prelude::*;

use super::math::best_simd;

/// `[B, N, D]` patches → `[B, P + N, D]` tokens as [`dmpo_model::kernels::embed_tokens`];
/// `None` (declined) for other dtypes or shapes that do not fit together.
pub fn embed_tokens(input: &TokensInput<burn::backend::Flex>) -> Option<FlexTensor> {
    let TokensInput {
        patches,
        prefix,
        pos_embed,
        pos_on_prefix,
    } = input;
    let f32s = |t: &FlexTensor| t.dtype() == DType::F32;
    if !f32s(patches) || !f32s(pos_embed) || !prefix.iter().all(f32s) {
        return None;
    }
    let shape = patches.layout().shape();
    if shape.num_dims() != 3 {
        return None;
    }
    let (b, n, d) = (shape[0], shape[1], shape[2]);
    let mut p = 0;
    for t in prefix {
        let s = t.layout().shape();
        if s.num_dims() != 3 || s[0] != 1 || s[2] != d {
            return None;
        }
        p += s[1];
    }
    let pos_rows = if *pos_on_prefix { p + n } else { n };
    let pos_shape = pos_embed.layout().shape();
    if pos_shape.num_dims() != 3
        || pos_shape[0] != 1
        || pos_shape[1] != pos_rows
        || pos_shape[2] != d
    {
        return None;
    }
    let patches = patches.to_contiguous();
    let pos_embed = pos_embed.to_contiguous();
    let prefix: Vec<FlexTensor> = prefix.iter().map(|t| t.to_contiguous()).collect();
    let prefix_values: Vec<&[f32]> = prefix
        .iter()
        .map(|t| t.as_slice::<f32>())
        .collect::<Option<_>>()?;
    // The prefix rows, concatenated: `[P, D]`.
    let prefix_rows: Vec<f32> = prefix_values.concat();
    let (patches, pos) = (patches.as_slice::<f32>()?, pos_embed.as_slice::<f32>()?);
    let tokens = (p + n) * d;
    let mut out: Vec<f32> = Vec::with_capacity(b * tokens);
    if tokens > 0 {
        let image = Image {
            prefix: &prefix_rows,
            pos,
            pos_on_prefix: *pos_on_prefix,
        };
        out.spare_capacity_mut()
            .par_chunks_mut(tokens)
            .zip(patches.par_chunks(n * d))
            .for_each(|(dst, patches)| image.write(patches, dst));
    }
    // SAFETY: `Image::write` wrote every element of every image's chunk, which cover `out`.
    unsafe { out.set_len(b * tokens) };
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from([b, p + n, d])),
        DType::F32,
    ))
}

/// What every image shares.
struct Image<'a> {
    /// `[P, D]`.
    prefix: &'a [f32],
    /// `[P + N, D]` or `[N, D]`.
    pos: &'a [f32],
    pos_on_prefix: bool,
}

impl Image<'_> {
    /// One image's tokens into `dst` (`[P + N, D]`, all written) from its `patches`.
    fn write(&self, patches: &[f32], dst: &mut [MaybeUninit<f32>]) {
        let this = self;
        best_simd!((this: &Image<'_>, patches: &[f32], dst: &mut [MaybeUninit<f32>]) {
            this.write_body(patches, dst)
        })
    }

    #[inline(always)]
    fn write_body(&self, patches: &[f32], dst: &mut [MaybeUninit<f32>]) {
        let (head, tail) = dst.split_at_mut(self.prefix.len());
        if self.pos_on_prefix {
            let (pos_prefix, pos_patches) = self.pos.split_at(self.prefix.len());
            sum_into(head, self.prefix, pos_prefix);
            sum_into(tail, patches, pos_patches);
        } else {
            for (o, &v) in head.iter_mut().zip(self.prefix) {
                o.write(v);
            }
            sum_into(tail, patches, self.pos);
        }
    }
}

/// `dst[i] = a[i] + b[i]`, all three the same length.
#[inline(always)]
fn sum_into(dst: &mut [MaybeUninit<f32>], a: &[f32], b: &[f32]) {
    assert!(
        a.len() == dst.len() && b.len() == dst.len(),
        "lengths differ"
    );
    for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        o.write(x + y);
    }
}
