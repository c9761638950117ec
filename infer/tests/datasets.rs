//! Each dataset reader on small files made here, including broken ones.

use std::io::Write;
use std::path::Path;

use burn::data::dataset::Dataset;
use dmpo_infer::data::{DataError, DatasetFormat, load_splits, read_idx_images};

fn idx_images(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, rows, cols] {
        b.extend((v as u32).to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| (i % 251) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend((labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_files_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("fashion-mnist");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("train-images-idx3-ubyte.gz"),
        gz(&idx_images(5, 28, 28)),
    )
    .unwrap();
    std::fs::write(
        d.join("train-labels-idx1-ubyte.gz"),
        gz(&idx_labels(&[0, 1, 2, 9, 4])),
    )
    .unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx_images(2, 28, 28)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_labels(&[3, 3])).unwrap();
    assert_eq!(DatasetFormat::detect(&d), Some(DatasetFormat::Idx));
    let s = load_splits(&d).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (5, 2));
    assert_eq!(s.train.classes[9], "Ankle boot");
    let img = s.train.get(1).unwrap().image.load().unwrap();
    assert_eq!((img.width(), img.height()), (28, 28));

    // A truncated image file names itself and the mismatch.
    let bad = d.join("bad-images");
    let mut bytes = idx_images(5, 28, 28);
    bytes.truncate(100);
    std::fs::write(&bad, bytes).unwrap();
    let msg = read_idx_images(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("bad-images") && msg.contains("header says 5 images"),
        "{msg}"
    );
}

#[test]
fn cifar10_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i / 1024) as u8 * 100));
        r
    };
    for i in 1..=5 {
        std::fs::write(
            dir.path().join(format!("data_batch_{i}.bin")),
            [record(i), record(0)].concat(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), record(7)).unwrap();
    let s = load_splits(dir.path()).unwrap();
    assert_eq!((s.train.len(), s.test.len()), (10, 1));
    assert_eq!(s.test.get(0).unwrap().label, 7);
    let img = s.test.get(0).unwrap().image.load().unwrap().to_rgb8();
    assert_eq!(img.get_pixel(5, 5).0, [0, 100, 200]);

    std::fs::write(dir.path().join("test_batch.bin"), vec![0u8; 100]).unwrap();
    let msg = load_splits(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("test_batch.bin") && msg.contains("CIFAR records"),
        "{msg}"
    );
}

fn png(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders_skip_what_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for class in ["cat", "dog"] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            png(&d.join("a.png"), 8, 6);
        }
    }
    let cats = dir.path().join("train/cat");
    std::fs::write(cats.join("empty.jpg"), b"").unwrap();
    std::fs::write(cats.join("text.png"), b"this is not a png").unwrap();
    // A PNG saved with a .jpg name is still read (format guessed from the content).
    png(&cats.join("misnamed.jpg"), 4, 4);
    // Grey and RGBA images are fine.
    image::GrayImage::from_pixel(5, 5, image::Luma([7]))
        .save(cats.join("grey.png"))
        .unwrap();
    image::RgbaImage::from_pixel(5, 5, image::Rgba([1, 2, 3, 4]))
        .save(cats.join("rgba.png"))
        .unwrap();
    let s = load_splits(dir.path()).unwrap();
    assert_eq!(s.train.classes, vec!["cat", "dog"]);
    assert_eq!(s.train.len(), 5, "{:?}", s.train.samples);
    assert_eq!(s.test.len(), 2);
    for i in 0..s.train.len() {
        s.train.get(i).unwrap().image.load().unwrap();
    }
    // A file that breaks after the scan is a clear error naming it.
    let a = cats.join("a.png");
    let bytes = std::fs::read(&a).unwrap();
    std::fs::write(&a, &bytes[..bytes.len() / 2]).unwrap();
    let sample = s
        .train
        .samples
        .iter()
        .find(|x| x.image.describe().ends_with("cat/a.png"))
        .unwrap();
    let err = sample.image.load().unwrap_err();
    assert!(
        matches!(err, DataError::Image { .. }) && err.to_string().contains("a.png"),
        "{err}"
    );
}

#[test]
fn vtab_lists_resolve_relative_paths_and_skip_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("images")).unwrap();
    png(&dir.path().join("images/1.png"), 4, 4);
    png(&dir.path().join("images/2.png"), 4, 4);
    std::fs::write(
        dir.path().join("train800val200.txt"),
        "images/1.png 0\nimages/missing.png 1\nimages/2.png 3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("test.txt"), "images/2.png 1\n").unwrap();
    let s = load_splits(dir.path()).unwrap();
    assert_eq!(s.train.len(), 2);
    assert_eq!(s.train.num_classes(), 4);
    std::fs::write(dir.path().join("test.txt"), "images/2.png one\n").unwrap();
    let msg = load_splits(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("test.txt") && msg.contains("line 1"), "{msg}");
}

#[test]
fn an_unknown_layout_says_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let msg = load_splits(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("no dataset found"), "{msg}");
}

fn hostile(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/hostile")
        .join(name)
}

/// A PNG of the given size whose header is valid and whose pixels are missing: what a
/// decompression bomb looks like before it is inflated.
fn png_header_only(path: &Path, w: u32, h: u32) {
    let chunk = |bytes: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        bytes.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        bytes.extend(body);
        bytes.extend(crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut bytes, b"IHDR", &ihdr);
    chunk(
        &mut bytes,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut bytes, b"IEND", &[]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn unusual_images_decode_to_8_bit_rgb() {
    use dmpo_infer::data::decode_file;
    // CMYK JPEG (Pillow: pure red), 16-bit grey PNG (Pillow: white), 16-bit RGB PNG.
    let red = decode_file(&hostile("cmyk.jpg")).unwrap().to_rgb8();
    let p = red.get_pixel(3, 3).0;
    assert!(
        p[0] > 240 && p[1] < 15 && p[2] < 15,
        "CMYK red decoded as {p:?}"
    );
    let white = decode_file(&hostile("grey16.png")).unwrap().to_rgb8();
    assert_eq!(white.get_pixel(0, 0).0, [255, 255, 255]);
    let dir = tempfile::tempdir().unwrap();
    let rgb16 = dir.path().join("rgb16.png");
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(4, 4, image::Rgb([65535, 0, 32896]))
        .save(&rgb16)
        .unwrap();
    assert_eq!(
        decode_file(&rgb16).unwrap().to_rgb8().get_pixel(1, 1).0,
        [255, 0, 128]
    );
}

#[test]
fn empty_truncated_and_oversized_images_are_refused_by_name() {
    use dmpo_infer::data::{MAX_IMAGE_PIXELS, decode_file};
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let truncated = dir.path().join("truncated.png");
    png(&truncated, 16, 16);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 20]).unwrap();
    // 100 000 x 100 000 pixels declared in a 65-byte file.
    let bomb = dir.path().join("bomb.png");
    png_header_only(&bomb, 100_000, 100_000);
    for path in [&empty, &truncated, &bomb] {
        let err = decode_file(path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    let err = decode_file(&bomb).unwrap_err().to_string();
    assert!(
        err.contains("100000x100000") && err.contains(&MAX_IMAGE_PIXELS.to_string()),
        "{err}"
    );
}

#[test]
fn what_the_fuzzer_found_stays_fixed() {
    use dmpo_infer::data::decode_file;
    // A 51-byte GIF whose screen is 12031 x 0: the evaluation resize divided by the zero side
    // and asked for a 219 GB buffer (found by `cargo fuzz run image`, docs/reliability.md).
    let path = hostile("fuzz_gif_zero_height.gif");
    let err = decode_file(&path).unwrap_err().to_string();
    assert!(err.contains("has no pixels"), "{err}");
}

/// `subset`: the first N of each class, or, with a skip, the next N: two subsets that share no
/// image (the demo's data and a validation set carved beside it).
#[test]
fn subsets_with_a_skip_share_no_image_with_those_without() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("full");
    std::fs::create_dir(&d).unwrap();
    // 12 images, labels 0,1,0,1,...: six per class, each image distinct.
    let labels: Vec<u8> = (0..12).map(|i| (i % 2) as u8).collect();
    for prefix in ["train", "t10k"] {
        std::fs::write(
            d.join(format!("{prefix}-images-idx3-ubyte")),
            idx_images(12, 4, 4),
        )
        .unwrap();
        std::fs::write(
            d.join(format!("{prefix}-labels-idx1-ubyte")),
            idx_labels(&labels),
        )
        .unwrap();
    }
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    dmpo_infer::data::write_idx_subset(&d, &first, 2, 1, 0).unwrap();
    dmpo_infer::data::write_idx_subset(&d, &second, 3, 1, 2).unwrap();
    let images = |dir: &Path| read_idx_images(&dir.join("train-images-idx3-ubyte.gz")).unwrap();
    let (a, b) = (images(&first), images(&second));
    assert_eq!((a.len(), b.len()), (4, 6));
    assert!(a.iter().all(|x| !b.contains(x)), "the subsets overlap");
    let all = read_idx_images(&d.join("train-images-idx3-ubyte")).unwrap();
    // The second subset is images 4..9 of the file: the 3rd to 5th of each class.
    assert_eq!(b, all[4..10].to_vec());
}
