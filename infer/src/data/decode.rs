//! Decoding untrusted image bytes within bounds. One decoder serves dataset files and request
//! bodies (dmpo-serve), so a decompression bomb or a frame with no pixels is refused the same way
//! wherever an image comes from.

use std::io::{BufRead, Cursor, Seek};

use image::{DynamicImage, ImageReader};

/// Images larger than this many pixels are refused (decompression bombs); 64 megapixels.
pub const MAX_IMAGE_PIXELS: u64 = 64 * 1024 * 1024;

/// What an image may declare before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Width × height.
    pub max_pixels: u64,
    /// The longest side either way; `None` bounds only the pixel count.
    pub max_side: Option<u32>,
    /// A cap on the decoder's allocations, over the one fitted to the declared size.
    pub max_alloc: Option<u64>,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: MAX_IMAGE_PIXELS,
            max_side: None,
            max_alloc: None,
        }
    }
}

/// Why an image was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an image (no PNG, JPEG, BMP, GIF, TIFF or WebP signature)")]
    UnknownFormat,
    #[error("{width}x{height}: the image has no pixels")]
    NoPixels { width: u32, height: u32 },
    #[error("{width}x{height} pixels is over the limit of {limit} (a decompression bomb?)")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("{width}x{height} is over the limit of {limit} pixels a side")]
    SideTooLong { width: u32, height: u32, limit: u32 },
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

/// Decodes an image held in memory (an upload), whatever its format.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<DynamicImage, DecodeError> {
    decode_with(|| Ok(ImageReader::new(Cursor::new(bytes))), limits)
}

/// Decodes from a reader `open` makes afresh: reading the dimensions consumes a reader, so it is
/// opened twice, once for the header (cheap), once to decode within a memory limit fitted to
/// the image.
pub(crate) fn decode_with<R: BufRead + Seek>(
    mut open: impl FnMut() -> std::io::Result<ImageReader<R>>,
    limits: &DecodeLimits,
) -> Result<DynamicImage, DecodeError> {
    let header = open()?.with_guessed_format()?;
    if header.format().is_none() {
        return Err(DecodeError::UnknownFormat);
    }
    let (width, height) = header.into_dimensions()?;
    check_size(width, height, limits)?;
    let mut reader = open()?.with_guessed_format()?;
    let fitted = u64::from(width) * u64::from(height) * 16 + (1 << 20);
    let mut bounds = image::Limits::default();
    bounds.max_alloc = Some(limits.max_alloc.map_or(fitted, |cap| cap.min(fitted)));
    reader.limits(bounds);
    let img = reader.decode()?;
    // A container can declare one size and hold a frame of another (GIF's logical screen).
    check_size(img.width(), img.height(), limits)?;
    Ok(img)
}

fn check_size(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::NoPixels { width, height });
    }
    if let Some(limit) = limits.max_side
        && width.max(height) > limit
    {
        return Err(DecodeError::SideTooLong {
            width,
            height,
            limit,
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::RgbImage::new(width, height)
            .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn bytes_decode_within_bounds_and_are_refused_past_them() {
        let ok = decode_bytes(&png(9, 5), &DecodeLimits::default()).unwrap();
        assert_eq!((ok.width(), ok.height()), (9, 5));
        let side = DecodeLimits {
            max_side: Some(8),
            ..DecodeLimits::default()
        };
        let err = decode_bytes(&png(9, 5), &side).unwrap_err();
        assert!(
            matches!(err, DecodeError::SideTooLong { limit: 8, .. }),
            "{err}"
        );
        let pixels = DecodeLimits {
            max_pixels: 44,
            ..DecodeLimits::default()
        };
        let err = decode_bytes(&png(9, 5), &pixels).unwrap_err();
        assert!(
            err.to_string()
                .contains("9x5 pixels is over the limit of 44"),
            "{err}"
        );
        let err = decode_bytes(b"plain text", &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownFormat), "{err}");
    }
}
