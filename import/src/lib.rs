//! # dmpo-import
//!
//! Turns the checkpoints users already have into [`dmpo_model`] modules: timm `.safetensors`
//! and PyTorch `.pth` state dicts, and Hugging Face `transformers` ViT checkpoints. The
//! architecture is read off the tensors; every missing, unexpected or misshapen tensor is an
//! error that names the file, the key and the shapes.
//!
//! ```no_run
//! # use burn::backend::NdArray;
//! let device = Default::default();
//! let (backbone, model) = dmpo_import::load_any::<NdArray>(
//!     "vit_small.safetensors".as_ref(),
//!     &dmpo_import::ImportOptions::default(),
//!     &device,
//! )?;
//! # Ok::<(), dmpo_import::ImportError>(())
//! ```

mod converted;
mod error;
mod hf_layout;
mod infer_config;
pub mod onnx;
mod readers;
pub mod resample;
mod tensor_map;
mod trained;
mod vit_loader;

mod config_compat;
pub use config_compat::overlay;

use std::path::Path;

use burn::prelude::*;
use dmpo_model::Preprocess;
use dmpo_model::vit::{VisionTransformer, VitConfig};

pub use converted::{
    BackboneInfo, CONFIG_FILE, WEIGHTS_FILE, load_backbone, load_backbone_bytes,
    parse_backbone_info, read_backbone_info, save_backbone, sha256_hex, write_atomic,
};
pub use error::{ImportError, Result};
pub use hf_layout::{HfConfigHints, hf_to_timm, is_hf_layout, read_sidecar_config};
pub use infer_config::{ImportOptions, infer_config};
pub use readers::{
    CheckpointFormat, read_checkpoint, read_tensor_file, sniff_format, write_safetensors,
};
pub use tensor_map::{HostTensor, TensorMap};
pub use trained::{
    TrainedBinding, backbone_fingerprint, load_trained, load_trained_bytes, read_binding,
    save_trained,
};
pub use vit_loader::load_vit;

/// A checkpoint file read, translated to timm's layout and its architecture inferred.
pub struct Imported<B: Backend> {
    pub config: VitConfig,
    pub preprocess: Preprocess,
    pub model: VisionTransformer<B>,
}

/// Imports a timm, PyTorch or Hugging Face ViT checkpoint file, or a ViT exported to ONNX.
pub fn import_checkpoint<B: Backend>(
    path: &Path,
    opts: &ImportOptions,
    device: &B::Device,
) -> Result<Imported<B>> {
    let mut opts = opts.clone();
    let mut hints = None;
    let mut map = if sniff_format(path)? == CheckpointFormat::Onnx {
        // What the graph computes: its input size, its resampling of the position grid to
        // it, its LayerNorm epsilon (the user's flags still win).
        let onnx = onnx::read_onnx(path)?;
        opts.img_size = opts.img_size.or(onnx.input_size);
        opts.resampling = opts.resampling.or(onnx.resampling);
        hints = Some(HfConfigHints {
            num_heads: onnx.num_heads,
            layer_norm_eps: onnx.norm_eps,
        });
        onnx.map
    } else {
        read_checkpoint(path)?
    };
    if is_hf_layout(&map) {
        if hints.is_none() {
            hints = read_sidecar_config(path)?;
        }
        map = hf_to_timm(map)?;
        if hints.is_none() && opts.norm_eps.is_none() {
            // transformers' defaults when no config.json says otherwise: 1e-12 for ViTConfig,
            // 1e-6 for DINOv2 (told apart by its LayerScale); the wrong one shifts every
            // output slightly.
            let dinov2 = map.contains("blocks.0.ls1.gamma");
            hints = Some(HfConfigHints {
                num_heads: None,
                layer_norm_eps: Some(if dinov2 { 1e-6 } else { 1e-12 }),
            });
        }
    }
    let config = infer_config(&map, &opts, hints.as_ref())?;
    let preprocess = default_preprocess(&config, opts.arch.as_deref());
    let model = load_vit(&config, map, opts.resampling.unwrap_or_default(), device)?;
    Ok(Imported {
        config,
        preprocess,
        model,
    })
}

/// timm's evaluation preprocessing for an architecture: DeiT and DINOv2 (by name, or by its
/// signature: LayerScale on 14-pixel patches) use ImageNet statistics, the other ViTs (augreg,
/// in21k, HF google/vit) mean = std = 0.5.
pub fn default_preprocess(config: &VitConfig, arch: Option<&str>) -> Preprocess {
    let p = Preprocess::new(config.img_size);
    let dinov2 = arch.map_or(
        config.init_values.is_some() && config.patch_size == 14,
        |a| a.contains("dinov2"),
    );
    if arch.is_some_and(|a| a.starts_with("deit")) {
        p.with_mean(Preprocess::IMAGENET_MEAN)
            .with_std(Preprocess::IMAGENET_STD)
            .with_crop_pct(0.875)
    } else if dinov2 {
        p.with_mean(Preprocess::IMAGENET_MEAN)
            .with_std(Preprocess::IMAGENET_STD)
            .with_crop_pct(1.0)
    } else {
        p
    }
}

/// Loads a backbone from a checkpoint file or a directory written by [`save_backbone`].
pub fn load_any<B: Backend>(
    path: &Path,
    opts: &ImportOptions,
    device: &B::Device,
) -> Result<(BackboneInfo, VisionTransformer<B>)> {
    if path.is_dir() {
        return load_backbone(path, device);
    }
    let imported = import_checkpoint(path, opts, device)?;
    let info = BackboneInfo {
        format: "dmpo-burn/vit".into(),
        vit: imported.config,
        preprocess: imported.preprocess,
        source: path.display().to_string(),
        weights_sha256: String::new(),
    };
    Ok((info, imported.model))
}

#[cfg(test)]
mod preprocess_tests {
    use super::*;
    use dmpo_model::vit::preset;

    #[test]
    fn dinov2_gets_imagenet_statistics_by_name_or_by_signature() {
        let dinov2 = preset("vit_small_patch14_reg4_dinov2").unwrap();
        for arch in [Some("vit_small_patch14_reg4_dinov2"), None] {
            let p = default_preprocess(&dinov2, arch);
            assert_eq!(p.mean, Preprocess::IMAGENET_MEAN, "{arch:?}");
            assert_eq!(p.crop_pct, 1.0);
        }
        let augreg = preset("vit_small_patch16_224").unwrap();
        assert_eq!(default_preprocess(&augreg, None).mean, [0.5; 3]);
    }
}
