//! Helpers shared by the model crate's integration tests.

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
