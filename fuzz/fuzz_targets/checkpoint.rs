//! Arbitrary bytes as a checkpoint file: sniffing, the safetensors and pickle readers, the
//! architecture inference and the loading into a ViT must answer with an error, never a panic,
//! an abort or an unbounded allocation.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::NdArray;
use dmpo_import::{ImportOptions, import_checkpoint};
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("dmpo-fuzz-checkpoint-{}.bin", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    // The readers take paths (as users give them); the format is sniffed from the content.
    std::fs::write(scratch(), data).unwrap();
    let _ = import_checkpoint::<NdArray>(scratch(), &ImportOptions::default(), &Default::default());
});
