//! A Vision Transformer with timm's exact semantics (`timm/models/vision_transformer.py`).
//!
//! One concept per file: the [`VitConfig`] and its named presets, the patch embedding,
//! attention, MLP, LayerScale, the pre-norm [`Block`], and the [`VisionTransformer`] that strings
//! them together and exposes every block's output (the exits of the DMPO model hang there).

mod attention;
mod block;
mod config;
mod layer_scale;
mod mlp;
mod patch_embed;
mod presets;
mod vision_transformer;

pub use attention::Attention;
pub use block::Block;
pub use config::{GlobalPool, VitConfig};
pub use layer_scale::LayerScale;
pub use mlp::Mlp;
pub use patch_embed::PatchEmbed;
pub use presets::{PRESET_NAMES, preset};
pub use vision_transformer::{VisionTransformer, VitOutput, pool_tokens};
