use super::VitConfig;

/// Names accepted by [`preset`]: the timm architectures users load most.
pub const PRESET_NAMES: &[&str] = &[
    "vit_tiny_patch16_224",
    "vit_tiny_patch32_224",
    "vit_small_patch16_224",
    "vit_small_patch32_224",
    "vit_base_patch16_224",
    "vit_base_patch32_224",
    "vit_large_patch16_224",
    "vit_large_patch32_224",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
];

/// The timm architecture of that name (ImageNet-1k head), or `None` if unknown.
///
/// The `_224` suffix may be swapped for another resolution (`vit_base_patch16_384`), and the
/// timm tag after a dot (`.augreg_in21k`) is ignored, so checkpoint names work as they are.
pub fn preset(name: &str) -> Option<VitConfig> {
    let name = name.split('.').next().unwrap_or(name);
    let (family, rest) = name.split_once("_patch")?;
    let (patch, img) = rest.split_once('_')?;
    let patch: usize = patch.parse().ok()?;
    let img: usize = img.parse().ok()?;
    let (embed_dim, depth, num_heads) = match family {
        "vit_tiny" | "deit_tiny" => (192, 12, 3),
        "vit_small" | "deit_small" => (384, 12, 6),
        "vit_base" | "deit_base" => (768, 12, 12),
        "vit_large" => (1024, 24, 16),
        _ => return None,
    };
    Some(
        VitConfig::new()
            .with_img_size(img)
            .with_patch_size(patch)
            .with_embed_dim(embed_dim)
            .with_depth(depth)
            .with_num_heads(num_heads)
            .with_mlp_hidden_dim(4 * embed_dim),
    )
}

impl VitConfig {
    /// The smallest ViT that still has every part (16 px, patch 4, width 24, 4 blocks, 2 heads,
    /// MLP 48, 5 classes): for tests and examples where the weights do not matter, fast on any
    /// backend.
    pub fn tiny() -> Self {
        VitConfig::new()
            .with_img_size(16)
            .with_patch_size(4)
            .with_embed_dim(24)
            .with_depth(4)
            .with_num_heads(2)
            .with_mlp_hidden_dim(48)
            .with_num_classes(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_preset_resolves_and_validates() {
        for name in PRESET_NAMES {
            let cfg = preset(name).unwrap_or_else(|| panic!("{name}"));
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn checkpoint_tags_and_resolutions_are_understood() {
        let cfg = preset("vit_base_patch16_384.augreg_in21k").unwrap();
        assert_eq!(
            (cfg.img_size, cfg.patch_size, cfg.embed_dim),
            (384, 16, 768)
        );
        assert!(preset("resnet50").is_none());
    }
}
