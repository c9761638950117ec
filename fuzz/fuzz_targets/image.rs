//! Arbitrary bytes as an image file: decoding within the pixel limit, then the evaluation and
//! training transforms, must answer with an error or a normalised tensor, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use dmpo_infer::data::decode_file;
use dmpo_infer::transform::{Augment, eval_transform, train_transform};
use dmpo_model::Preprocess;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("dmpo-fuzz-image-{}.img", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    std::fs::write(scratch(), data).unwrap();
    if let Ok(img) = decode_file(scratch()) {
        let p = Preprocess::new(16);
        assert_eq!(eval_transform(&img, &p).len(), 3 * 16 * 16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(data.len() as u64);
        assert_eq!(
            train_transform(&img, &p, &Augment::default(), &mut rng).len(),
            3 * 16 * 16
        );
    }
});
