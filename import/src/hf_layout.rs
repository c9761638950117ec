//! Hugging Face `transformers` ViT checkpoints (`ViTModel`, `ViTForImageClassification`,
//! `Dinov2Model`, `Dinov2WithRegistersModel`): their key layout translated to timm's, with the
//! split query/key/value fused into `qkv`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ImportError, Result};
use crate::tensor_map::{HostTensor, TensorMap};

/// True if the keys follow the `transformers` layout rather than timm's.
pub fn is_hf_layout(map: &TensorMap) -> bool {
    ["", "vit.", "dinov2."]
        .iter()
        .any(|p| map.contains(&format!("{p}embeddings.position_embeddings")))
}

/// The `model_type`s of `config.json` whose checkpoints this module reads.
const HF_MODEL_TYPES: &[&str] = &["vit", "dinov2", "dinov2_with_registers"];

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
    let model_type = json.get("model_type").and_then(|v| v.as_str());
    if !model_type.is_some_and(|t| HF_MODEL_TYPES.contains(&t)) {
        return Ok(None);
    }
    if json.get("use_swiglu_ffn").and_then(|v| v.as_bool()) == Some(true) {
        return Err(ImportError::Config {
            path,
            reason: "use_swiglu_ffn (DINOv2-giant's SwiGLU MLP) is not supported".into(),
        });
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
        let k = key
            .strip_prefix("vit.")
            .or_else(|| key.strip_prefix("dinov2."))
            .unwrap_or(&key);
        if k.starts_with("pooler.") || k == "embeddings.mask_token" {
            tracing::info!("ignoring `{key}`: it has no counterpart in timm's ViT");
            continue;
        }
        if key.starts_with("dinov2.") && k.starts_with("classifier.") {
            // Dinov2ForImageClassification's head reads [class token, mean of the patch
            // tokens], a pooling timm's ViT does not have; tuning gives the model new heads.
            tracing::info!("ignoring `{key}`: a DINOv2 classifier on [CLS, mean patch] tokens");
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
                    // DINOv2's names.
                    ("norm1.", "norm1."),
                    ("norm2.", "norm2."),
                    ("layer_scale1.lambda1", "ls1.gamma"),
                    ("layer_scale2.lambda1", "ls2.gamma"),
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
            "embeddings.register_tokens" => "reg_token".to_string(),
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
    fold_class_position_for_registers(&mut out);
    Ok(TensorMap::new(&path, out))
}

/// `transformers`' DINOv2 with registers adds the position embedding to the class token and
/// the patches, then inserts the registers; timm's equivalent (`no_embed_class`) has positions
/// for the patches only. The class token's position is a constant, so it is folded into the
/// class token (as timm's own DINOv2 conversion does), and `pos_embed` keeps the patches'.
fn fold_class_position_for_registers(out: &mut BTreeMap<String, HostTensor>) {
    if !out.contains_key("reg_token") {
        return;
    }
    let (Some(pos), Some(cls)) = (out.get("pos_embed"), out.get("cls_token")) else {
        return;
    };
    let (tokens, d) = match pos.shape.as_slice() {
        [1, t, d] if cls.shape == [1, 1, *d] => (*t, *d),
        _ => return, // shapes are checked, and reported, when the model is loaded
    };
    if crate::resample::square_side(tokens.saturating_sub(1)).is_none() {
        return;
    }
    let folded: Vec<f32> = cls
        .data
        .iter()
        .zip(&pos.data[..d])
        .map(|(c, p)| c + p)
        .collect();
    let patches = HostTensor::new(vec![1, tokens - 1, d], pos.data[d..].to_vec());
    out.insert("cls_token".into(), HostTensor::new(vec![1, 1, d], folded));
    out.insert("pos_embed".into(), patches);
}
