//! Hugging Face `transformers` ViT checkpoints (`ViTModel`, `ViTForImageClassification`):
//! their key layout translated to timm's, with the split query/key/value fused into `qkv`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ImportError, Result};
use crate::tensor_map::{HostTensor, TensorMap};

/// True if the keys follow the `transformers` layout rather than timm's.
pub fn is_hf_layout(map: &TensorMap) -> bool {
    map.contains("embeddings.position_embeddings")
        || map.contains("vit.embeddings.position_embeddings")
}

/// What a `config.json` beside a Hugging Face checkpoint says that the tensors cannot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HfConfigHints {
    pub num_heads: Option<usize>,
    pub layer_norm_eps: Option<f64>,
}

/// Reads `config.json` next to `weights`, if there is one and it describes a ViT.
pub fn read_sidecar_config(weights: &Path) -> Result<Option<HfConfigHints>> {
    let Some(path) = weights.parent().map(|d| d.join("config.json")) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ImportError::Io {
        path: path.clone(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ImportError::Config {
        path: path.clone(),
        reason: format!("invalid JSON: {e}"),
    })?;
    if json.get("model_type").and_then(|v| v.as_str()) != Some("vit") {
        return Ok(None);
    }
    if let Some(act) = json.get("hidden_act").and_then(|v| v.as_str())
        && act != "gelu"
    {
        return Err(ImportError::Config {
            path,
            reason: format!("hidden_act \"{act}\" is not supported (only exact \"gelu\")"),
        });
    }
    Ok(Some(HfConfigHints {
        num_heads: json
            .get("num_attention_heads")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize),
        layer_norm_eps: json.get("layer_norm_eps").and_then(|v| v.as_f64()),
    }))
}

/// Renames a `transformers` ViT state dict into timm's names, fusing q, k, v into `qkv`.
/// Keys it does not recognise are kept as they are, so they are reported as unexpected.
pub fn hf_to_timm(map: TensorMap) -> Result<TensorMap> {
    let path = map.path.clone();
    let mut out = BTreeMap::new();
    // (layer, "weight"|"bias") → [q, k, v]
    let mut qkv: BTreeMap<(usize, String), [Option<HostTensor>; 3]> = BTreeMap::new();
    for (key, tensor) in map.tensors {
        let k = key.strip_prefix("vit.").unwrap_or(&key);
        if k.starts_with("pooler.") || k == "embeddings.mask_token" {
            tracing::info!("ignoring `{key}`: it has no counterpart in timm's ViT");
            continue;
        }
        // Files use `encoder.layer.N`; transformers >= 5 names modules `layers.N` in memory, so
        // a `torch.save(model.state_dict())` from it carries those names.
        if let Some(rest) = k
            .strip_prefix("encoder.layer.")
            .or_else(|| k.strip_prefix("layers."))
        {
            let (layer, sub) = rest.split_once('.').unwrap_or((rest, ""));
            if let Ok(i) = layer.parse::<usize>() {
                if let Some((which, param)) = sub
                    .strip_prefix("attention.attention.")
                    .or_else(|| sub.strip_prefix("attention."))
                    .and_then(|s| s.split_once('.'))
                {
                    let slot = match which {
                        "query" | "q_proj" => Some(0),
                        "key" | "k_proj" => Some(1),
                        "value" | "v_proj" => Some(2),
                        _ => None,
                    };
                    if let Some(slot) = slot {
                        qkv.entry((i, param.to_string())).or_default()[slot] = Some(tensor);
                        continue;
                    }
                }
                let renamed = [
                    ("layernorm_before.", "norm1."),
                    ("attention.output.dense.", "attn.proj."),
                    ("attention.o_proj.", "attn.proj."),
                    ("layernorm_after.", "norm2."),
                    ("intermediate.dense.", "mlp.fc1."),
                    ("output.dense.", "mlp.fc2."),
                    ("mlp.", "mlp."),
                ]
                .iter()
                .find_map(|(from, to)| sub.strip_prefix(from).map(|p| format!("{to}{p}")));
                if let Some(name) = renamed {
                    out.insert(format!("blocks.{i}.{name}"), tensor);
                    continue;
                }
            }
        }
        let name = match k {
            "embeddings.cls_token" => "cls_token".to_string(),
            "embeddings.position_embeddings" => "pos_embed".to_string(),
            "embeddings.patch_embeddings.projection.weight" => "patch_embed.proj.weight".into(),
            "embeddings.patch_embeddings.projection.bias" => "patch_embed.proj.bias".into(),
            "layernorm.weight" => "norm.weight".into(),
            "layernorm.bias" => "norm.bias".into(),
            "classifier.weight" => "head.weight".into(),
            "classifier.bias" => "head.bias".into(),
            _ => key.clone(),
        };
        out.insert(name, tensor);
    }
    for ((layer, param), parts) in qkv {
        let mut fused = HostTensor::new(vec![0], Vec::new());
        for (slot, part) in parts.into_iter().enumerate() {
            let name = ["query", "key", "value"][slot];
            let hf_key = format!("encoder.layer.{layer}.attention.attention.{name}.{param}");
            let part = part.ok_or_else(|| ImportError::MissingKey {
                path: path.clone(),
                key: hf_key.clone(),
                expected: fused.shape.iter().skip(1).copied().collect(),
            })?;
            if slot > 0 && part.shape[1..] != fused.shape[1..] {
                return Err(ImportError::ShapeMismatch {
                    path: path.clone(),
                    key: hf_key,
                    found: part.shape,
                    expected: fused.shape[1..].to_vec(),
                });
            }
            let mut shape = part.shape.clone();
            shape[0] += fused.shape[0];
            fused.data.extend_from_slice(&part.data);
            fused.shape = shape;
        }
        out.insert(format!("blocks.{layer}.attn.qkv.{param}"), fused);
    }
    Ok(TensorMap::new(&path, out))
}
