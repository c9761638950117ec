//! Deterministic weights: every value is a pure function of the tensor's timm key and the
//! element index, bit-identical to `uniform`/`formula_tensor` in `fixtures/make_references.py`,
//! so references for large models need no stored weights.

use dmpo_import::HostTensor;
use dmpo_model::vit::VitConfig;

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// `n` values in [-1, 1), each a 24-bit fraction (exact in f32).
pub fn uniform(key: &str, n: usize) -> Vec<f32> {
    let seed = fnv1a(key);
    (0..n as u64)
        .map(|i| {
            let mut z = (seed ^ i).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 / (1u32 << 24) as f32;
            u * 2.0 - 1.0
        })
        .collect()
}

/// The value of tensor `key` with `shape` (same scale rules as the Python side).
pub fn formula_tensor(key: &str, shape: &[usize]) -> HostTensor {
    let n = shape.iter().product();
    let u = uniform(key, n);
    let data = if key == "cls_token" || key == "pos_embed" {
        u.iter().map(|v| 0.5f32 * v).collect()
    } else if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let s = (1.0 / (fan_in as f64).sqrt()) as f32;
        u.iter().map(|v| s * v).collect()
    } else if key.ends_with(".bias") {
        u.iter().map(|v| 0.1f32 * v).collect()
    } else {
        u.iter().map(|v| 1.0f32 + 0.1f32 * v).collect()
    };
    HostTensor::new(shape.to_vec(), data)
}

/// timm's `state_dict()` names and shapes for a ViT of this architecture.
pub fn timm_state_dict_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, h, p) = (c.embed_dim, c.mlp_hidden_dim, c.patch_size);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |k: &str, s: &[usize]| v.push((k.to_string(), s.to_vec()));
    if c.class_token {
        add("cls_token", &[1, 1, d]);
    }
    if c.reg_tokens > 0 {
        add("reg_token", &[1, c.reg_tokens, d]);
    }
    add("pos_embed", &[1, c.num_embedded_tokens(), d]);
    add("patch_embed.proj.weight", &[d, c.in_chans, p, p]);
    add("patch_embed.proj.bias", &[d]);
    for i in 0..c.depth {
        let b = |n: &str| format!("blocks.{i}.{n}");
        add(&b("norm1.weight"), &[d]);
        add(&b("norm1.bias"), &[d]);
        add(&b("attn.qkv.weight"), &[3 * d, d]);
        if c.qkv_bias {
            add(&b("attn.qkv.bias"), &[3 * d]);
        }
        add(&b("attn.proj.weight"), &[d, d]);
        add(&b("attn.proj.bias"), &[d]);
        if c.init_values.is_some() {
            add(&b("ls1.gamma"), &[d]);
            add(&b("ls2.gamma"), &[d]);
        }
        add(&b("norm2.weight"), &[d]);
        add(&b("norm2.bias"), &[d]);
        add(&b("mlp.fc1.weight"), &[h, d]);
        add(&b("mlp.fc1.bias"), &[h]);
        add(&b("mlp.fc2.weight"), &[d, h]);
        add(&b("mlp.fc2.bias"), &[d]);
    }
    let norm = if c.fc_norm { "fc_norm" } else { "norm" };
    add(&format!("{norm}.weight"), &[d]);
    add(&format!("{norm}.bias"), &[d]);
    if c.num_classes > 0 {
        add("head.weight", &[c.num_classes, d]);
        add("head.bias", &[c.num_classes]);
    }
    v
}

/// A full timm state dict of formula weights.
pub fn timm_state_dict(c: &VitConfig) -> Vec<(String, HostTensor)> {
    timm_state_dict_shapes(c)
        .into_iter()
        .map(|(k, s)| {
            let t = formula_tensor(&k, &s);
            (k, t)
        })
        .collect()
}

/// The same weights under Hugging Face `transformers` file names (q, k, v split).
pub fn hf_state_dict(c: &VitConfig) -> Vec<(String, HostTensor)> {
    let d = c.embed_dim;
    let mut out = Vec::new();
    for (k, t) in timm_state_dict(c) {
        let hf = match k.as_str() {
            "cls_token" => "vit.embeddings.cls_token".to_string(),
            "pos_embed" => "vit.embeddings.position_embeddings".into(),
            "patch_embed.proj.weight" => "vit.embeddings.patch_embeddings.projection.weight".into(),
            "patch_embed.proj.bias" => "vit.embeddings.patch_embeddings.projection.bias".into(),
            "norm.weight" => "vit.layernorm.weight".into(),
            "norm.bias" => "vit.layernorm.bias".into(),
            "head.weight" => "classifier.weight".into(),
            "head.bias" => "classifier.bias".into(),
            _ => {
                let rest = k.strip_prefix("blocks.").expect("block key");
                let (i, name) = rest.split_once('.').unwrap();
                let layer = format!("vit.encoder.layer.{i}");
                if let Some(param) = name.strip_prefix("attn.qkv.") {
                    let per = t.data.len() / 3;
                    for (j, part) in ["query", "key", "value"].iter().enumerate() {
                        let mut shape = t.shape.clone();
                        shape[0] = d;
                        let data = t.data[j * per..(j + 1) * per].to_vec();
                        out.push((
                            format!("{layer}.attention.attention.{part}.{param}"),
                            HostTensor::new(shape, data),
                        ));
                    }
                    continue;
                }
                let table = [
                    ("norm1.", "layernorm_before."),
                    ("attn.proj.", "attention.output.dense."),
                    ("norm2.", "layernorm_after."),
                    ("mlp.fc1.", "intermediate.dense."),
                    ("mlp.fc2.", "output.dense."),
                ];
                let (from, to) = table.iter().find(|(f, _)| name.starts_with(f)).unwrap();
                format!("{layer}.{to}{}", &name[from.len()..])
            }
        };
        out.push((hf, t));
    }
    out
}
