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
    "vit_small_patch14_dinov2",
    "vit_base_patch14_dinov2",
    "vit_large_patch14_dinov2",
    "vit_small_patch14_reg4_dinov2",
    "vit_base_patch14_reg4_dinov2",
    "vit_large_patch14_reg4_dinov2",
];

/// The timm architecture of that name (ImageNet-1k head), or `None` if unknown.
///
/// The `_224` suffix may be swapped for another resolution (`vit_base_patch16_384`), and the
/// timm tag after a dot (`.augreg_in21k`) is ignored, so checkpoint names work as they are.
/// DINOv2 (`vit_small_patch14_dinov2`, `..._reg4_dinov2`) is timm's: 518 px, LayerScale, no
/// head; the register variants have 4 registers and no position embedding for prefix tokens.
pub fn preset(name: &str) -> Option<VitConfig> {
    let name = name.split('.').next().unwrap_or(name);
    let (family, rest) = name.split_once("_patch")?;
    let (patch, img) = rest.split_once('_')?;
    let patch: usize = patch.parse().ok()?;
    let dinov2 = match img {
        "dinov2" => Some(0),
        "reg4_dinov2" => Some(4),
        _ => None,
    };
    let img: usize = match dinov2 {
        Some(_) => 518,
        None => img.parse().ok()?,
    };
    let (embed_dim, depth, num_heads) = match family {
        "vit_tiny" | "deit_tiny" => (192, 12, 3),
        "vit_small" | "deit_small" => (384, 12, 6),
        "vit_base" | "deit_base" => (768, 12, 12),
        "vit_large" => (1024, 24, 16),
        _ => return None,
    };
    let config = VitConfig::new()
        .with_img_size(img)
        .with_patch_size(patch)
        .with_embed_dim(embed_dim)
        .with_depth(depth)
        .with_num_heads(num_heads)
        .with_mlp_hidden_dim(4 * embed_dim);
    Some(match dinov2 {
        Some(registers) => config
            .with_init_values(Some(1e-5))
            .with_num_classes(0)
            .with_reg_tokens(registers)
            .with_no_embed_class(registers > 0),
        None => config,
    })
}

#[cfg(test)]
mod dinov2_tests {
    use super::*;

    #[test]
    fn dinov2_names_give_timms_architectures() {
        let s = preset("vit_small_patch14_dinov2.lvd142m").unwrap();
        assert_eq!(
            (s.img_size, s.patch_size, s.embed_dim, s.depth),
            (518, 14, 384, 12)
        );
        assert_eq!(
            (s.reg_tokens, s.no_embed_class, s.init_values),
            (0, false, Some(1e-5))
        );
        assert_eq!(s.num_tokens(), 37 * 37 + 1);
        let r = preset("vit_large_patch14_reg4_dinov2").unwrap();
        assert_eq!(
            (r.embed_dim, r.depth, r.num_heads, r.reg_tokens),
            (1024, 24, 16, 4)
        );
        assert!(r.no_embed_class);
        assert_eq!(
            (r.num_tokens(), r.num_embedded_tokens()),
            (37 * 37 + 5, 37 * 37)
        );
        assert!(preset("vit_small_patch14_reg8_dinov2").is_none());
    }
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
