//! Helpers shared by the model crate's integration tests.

use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;
use dmpo_model::vit::{GlobalPool, VitConfig};

/// timm's tiny test ViT, with a class token (token pooling) or without (average pooling and
/// `fc_norm`).
pub fn tiny_vit(class_token: bool) -> VitConfig {
    VitConfig::tiny()
        .with_class_token(class_token)
        .with_global_pool(if class_token {
            GlobalPool::Token
        } else {
            GlobalPool::Avg
        })
        .with_fc_norm(!class_token)
}

/// A tensor's values, as `f32`.
pub fn flat<const D: usize, BB: Backend>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// Burn's NdArray backend draws every random tensor (weight init included) from one
/// process-wide generator, and a file's tests run on parallel threads: another test's draws
/// could land between a test's seed and its own draws. Every test of a file whose assertions
/// rest on seeded draws holds this guard for its whole length, and so does every other test of
/// that file that draws.
#[allow(dead_code)] // each test file includes this module; not every one draws seeded
pub fn rng_lock() -> MutexGuard<'static, ()> {
    static RNG: Mutex<()> = Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`rng_lock`], then the generator seeded: the same draws on every run.
#[allow(dead_code)] // as rng_lock
pub fn seeded<BB: Backend>(device: &BB::Device, seed: u64) -> MutexGuard<'static, ()> {
    let guard = rng_lock();
    BB::seed(device, seed);
    guard
}
