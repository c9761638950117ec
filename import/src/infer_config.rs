//! Working out a [`VitConfig`] from what the tensors themselves say, plus the little they
//! cannot (the number of heads), from a preset name, a flag, or timm's width/64 default.

use dmpo_model::vit::{GlobalPool, VitConfig, preset};

use crate::error::{ImportError, Result};
use crate::hf_layout::HfConfigHints;
use crate::resample::square_side;
use crate::tensor_map::TensorMap;

/// What the user may tell the importer beyond the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// A timm architecture name (`vit_small_patch16_224`): gives the heads, and is checked
    /// against the tensors.
    pub arch: Option<String>,
    pub num_heads: Option<usize>,
    /// Run at another resolution: the position embedding is resampled (bicubic, as timm).
    pub img_size: Option<usize>,
    /// How to resample it; timm's antialiased bicubic unless the file says otherwise (an ONNX
    /// graph's own `Resize`).
    pub resampling: Option<crate::resample::Resampling>,
    /// Override the pooling inferred from the tensors.
    pub global_pool: Option<GlobalPool>,
    /// LayerNorm epsilon; defaults to timm's 1e-6 (Hugging Face's config value for HF files).
    pub norm_eps: Option<f64>,
}

/// Infers the architecture of a timm-layout [`TensorMap`].
pub fn infer_config(
    map: &TensorMap,
    opts: &ImportOptions,
    hf: Option<&HfConfigHints>,
) -> Result<VitConfig> {
    let err = |reason: String| ImportError::Config {
        path: map.path.clone(),
        reason,
    };
    let need = |key: &str, rank: usize| -> Result<Vec<usize>> {
        match map.shape(key) {
            None => Err(ImportError::MissingKey {
                path: map.path.clone(),
                key: key.to_string(),
                expected: vec![],
            }),
            Some(s) if s.len() != rank => Err(err(format!(
                "tensor `{key}` has shape {s:?}; expected {rank} dimensions"
            ))),
            Some(s) => Ok(s.to_vec()),
        }
    };
    let pos = need("pos_embed", 3)?;
    let patch = need("patch_embed.proj.weight", 4)?;
    let (embed_dim, tokens) = (pos[2], pos[1]);
    let (in_chans, patch_size) = (patch[1], patch[2]);
    if patch[2] != patch[3] {
        return Err(err(format!(
            "non-square patches {patch:?} are not supported"
        )));
    }
    let class_token = map.contains("cls_token");
    let reg_tokens = match map.shape("reg_token") {
        Some(s) if s.len() == 3 => s[1],
        Some(s) => {
            return Err(err(format!(
                "tensor `reg_token` has shape {s:?}; expected [1, registers, width]"
            )));
        }
        None => 0,
    };
    let prefix = usize::from(class_token) + reg_tokens;
    // timm embeds the prefix tokens' positions too, unless `no_embed_class` (DINOv2 with
    // registers): then pos_embed holds the patches alone.
    let (grid, no_embed_class) = match (
        square_side(tokens.saturating_sub(prefix)),
        square_side(tokens),
    ) {
        (Some(g), _) => (g, false),
        (None, Some(g)) if prefix > 0 => (g, true),
        _ => {
            return Err(err(format!(
                "pos_embed holds {tokens} positions: neither a square grid of patches nor one \
                 after {prefix} prefix token(s)"
            )));
        }
    };
    let depth = (0..)
        .take_while(|i| map.contains(&format!("blocks.{i}.norm1.weight")))
        .count();
    if depth == 0 {
        return Err(ImportError::MissingKey {
            path: map.path.clone(),
            key: "blocks.0.norm1.weight".into(),
            expected: vec![embed_dim],
        });
    }
    let mlp_hidden_dim = need("blocks.0.mlp.fc1.weight", 2)?[0];
    let qkv_bias = map.contains("blocks.0.attn.qkv.bias");
    let init_values = map.contains("blocks.0.ls1.gamma").then_some(1e-5);
    let fc_norm = map.contains("fc_norm.weight");
    let num_classes = map.shape("head.weight").map_or(0, |s| s[0]);
    let global_pool = opts.global_pool.unwrap_or(if fc_norm || !class_token {
        GlobalPool::Avg
    } else {
        GlobalPool::Token
    });

    let arch = match &opts.arch {
        Some(name) => Some(preset(name).ok_or_else(|| {
            err(format!(
                "unknown architecture `{name}`; known: {}",
                dmpo_model::vit::PRESET_NAMES.join(", ")
            ))
        })?),
        None => None,
    };
    if let Some(a) = &arch {
        let checks = [
            ("embed_dim", a.embed_dim, embed_dim),
            ("depth", a.depth, depth),
            ("patch_size", a.patch_size, patch_size),
            ("mlp hidden width", a.mlp_hidden_dim, mlp_hidden_dim),
        ];
        for (what, want, found) in checks {
            if want != found {
                return Err(err(format!(
                    "architecture `{}` has {what} {want}, but the checkpoint has {found}",
                    opts.arch.as_deref().unwrap_or_default()
                )));
            }
        }
    }
    let num_heads = opts
        .num_heads
        .or(arch.as_ref().map(|a| a.num_heads))
        .or(hf.and_then(|h| h.num_heads))
        .unwrap_or((embed_dim / 64).max(1));
    let norm_eps = opts
        .norm_eps
        .or(hf.and_then(|h| h.layer_norm_eps))
        .unwrap_or(1e-6);
    let config = VitConfig::new()
        .with_img_size(opts.img_size.unwrap_or(grid * patch_size))
        .with_patch_size(patch_size)
        .with_in_chans(in_chans)
        .with_embed_dim(embed_dim)
        .with_depth(depth)
        .with_num_heads(num_heads)
        .with_mlp_hidden_dim(mlp_hidden_dim)
        .with_qkv_bias(qkv_bias)
        .with_class_token(class_token)
        .with_reg_tokens(reg_tokens)
        .with_no_embed_class(no_embed_class)
        .with_global_pool(global_pool)
        .with_fc_norm(fc_norm)
        .with_init_values(init_values)
        .with_num_classes(num_classes)
        .with_norm_eps(norm_eps);
    config.validate().map_err(err)?;
    Ok(config)
}

/// The patch grid side the checkpoint's position embedding was trained for, given how many of
/// its positions belong to prefix tokens.
pub fn checkpoint_grid(map: &TensorMap, embedded_prefix: usize) -> usize {
    let tokens = map.shape("pos_embed").map_or(0, |s| s[1]);
    (tokens.saturating_sub(embedded_prefix) as f64)
        .sqrt()
        .round() as usize
}
