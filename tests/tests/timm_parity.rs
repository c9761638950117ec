//! Our ViT against timm and Hugging Face, number for number: the shared timm fixtures (real
//! timm-written `.safetensors` and `.pth`) and formula-weight references for ViT-S/16 at 224,
//! ViT-S/32, LayerScale + avg pooling without qkv bias, position-embedding resampling, DINOv2
//! (with and without registers), and the Hugging Face layout.

use std::collections::BTreeMap;

use burn::prelude::*;
use dmpo_import::{ImportOptions, import_checkpoint, read_tensor_file, write_safetensors};
use dmpo_model::vit::{GlobalPool, VitConfig};
use dmpo_tests::formula::{hf_state_dict, timm_state_dict, uniform};
use dmpo_tests::{FlexBackend, TestBackend, assert_close, fixture, host};

const TOL: f32 = 1e-4;

fn check_pico<B: Backend>(model_file: &str, io_file: &str) {
    let device = Default::default();
    // The head count is the one thing the tensors cannot tell (48 / 64 would give 1 head).
    let configs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("timm/configs.json")).unwrap())
            .unwrap();
    let name = model_file.split('.').next().unwrap();
    let opts = ImportOptions {
        num_heads: configs[name]["num_heads"].as_u64().map(|h| h as usize),
        ..Default::default()
    };
    let imported =
        import_checkpoint::<B>(&fixture(&format!("timm/{model_file}")), &opts, &device).unwrap();
    let mut io = read_tensor_file(&fixture(&format!("timm/{io_file}")))
        .unwrap()
        .tensors;
    let input = io.remove("input").unwrap();
    let x = Tensor::<B, 4>::from_data(TensorData::new(input.data, input.shape), &device);
    let out = imported.model.forward_all(x);
    // Blocks first: the first one that differs localises a mismatch.
    for (i, b) in out.blocks.into_iter().enumerate() {
        assert_close(
            &format!("block{i}"),
            &host(b),
            &io[&format!("block{i}")],
            TOL,
        );
    }
    assert_close("features", &host(out.features), &io["features"], TOL);
    assert_close("logits", &host(out.logits), &io["logits"], TOL);
}

#[test]
fn pico_cls_safetensors_matches_timm() {
    check_pico::<TestBackend>("vit_pico_cls.safetensors", "vit_pico_cls.io.safetensors");
}

#[test]
fn pico_cls_pth_matches_timm() {
    check_pico::<TestBackend>("vit_pico_cls.pth", "vit_pico_cls.io.safetensors");
}

#[test]
fn pico_gap_safetensors_matches_timm() {
    check_pico::<TestBackend>("vit_pico_gap.safetensors", "vit_pico_gap.io.safetensors");
}

#[test]
fn pico_gap_pth_matches_timm() {
    check_pico::<TestBackend>("vit_pico_gap.pth", "vit_pico_gap.io.safetensors");
}

/// The binaries' default CPU backend against the same timm outputs.
#[test]
fn pico_cls_and_gap_match_timm_on_flex() {
    check_pico::<FlexBackend>("vit_pico_cls.safetensors", "vit_pico_cls.io.safetensors");
    check_pico::<FlexBackend>("vit_pico_gap.safetensors", "vit_pico_gap.io.safetensors");
}

/// One entry of `fixtures/references/manifest.json`.
fn manifest(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("references/manifest.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

/// The checkpoint architecture described by timm constructor kwargs in the manifest.
fn timm_kwargs_config(kw: &serde_json::Value) -> VitConfig {
    let get =
        |k: &str, default: u64| kw.get(k).and_then(|v| v.as_u64()).unwrap_or(default) as usize;
    let d = get("embed_dim", 768);
    let class_token = kw
        .get("class_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let avg = kw.get("global_pool").and_then(|v| v.as_str()) == Some("avg");
    VitConfig::new()
        .with_img_size(get("img_size", 224))
        .with_patch_size(get("patch_size", 16))
        .with_embed_dim(d)
        .with_depth(get("depth", 12))
        .with_num_heads(get("num_heads", 12))
        .with_mlp_hidden_dim(4 * d)
        .with_qkv_bias(kw.get("qkv_bias").and_then(|v| v.as_bool()).unwrap_or(true))
        .with_class_token(class_token)
        .with_global_pool(if avg {
            GlobalPool::Avg
        } else {
            GlobalPool::Token
        })
        .with_fc_norm(avg)
        .with_init_values(kw.get("init_values").and_then(|v| v.as_f64()))
        .with_reg_tokens(get("reg_tokens", 0))
        .with_no_embed_class(
            kw.get("no_embed_class")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        )
        .with_num_classes(get("num_classes", 1000))
}

fn check_reference<B: Backend>(
    name: &str,
    tensors: Vec<(String, dmpo_import::HostTensor)>,
    file_name: &str,
) {
    let m = manifest(name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file_name);
    write_safetensors(&path, &tensors).unwrap();
    let opts = &m["import"];
    let opts = ImportOptions {
        arch: opts.get("arch").and_then(|v| v.as_str()).map(String::from),
        num_heads: opts
            .get("heads")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize),
        img_size: opts
            .get("img_size")
            .and_then(|v| v.as_u64())
            .map(|v| v as usize),
        ..Default::default()
    };
    let device = Default::default();
    let imported = import_checkpoint::<B>(&path, &opts, &device).unwrap();
    let shape: Vec<usize> = serde_json::from_value(m["input_shape"].clone()).unwrap();
    let x = uniform("input", shape.iter().product());
    let x = Tensor::<B, 4>::from_data(TensorData::new(x, shape), &device);
    let out = imported.model.forward_all(x);
    let io: BTreeMap<_, _> =
        read_tensor_file(&fixture(&format!("references/{name}.io.safetensors")))
            .unwrap()
            .tensors;
    // Blocks first: the first one that differs localises a mismatch.
    let blocks: Vec<usize> = serde_json::from_value(m["blocks"].clone()).unwrap();
    for i in blocks {
        let ours = host(out.blocks[i].clone());
        assert_close(&format!("block{i}"), &ours, &io[&format!("block{i}")], TOL);
    }
    assert_close("features", &host(out.features), &io["features"], TOL);
    assert_close("pre_logits", &host(out.pre_logits), &io["pre_logits"], TOL);
    assert_close("logits", &host(out.logits), &io["logits"], TOL);
}

fn check_timm_reference<B: Backend>(name: &str) {
    let cfg = timm_kwargs_config(&manifest(name)["checkpoint"]);
    check_reference::<B>(name, timm_state_dict(&cfg), "model.safetensors");
}

#[test]
fn vit_small_patch16_224_matches_timm() {
    check_timm_reference::<TestBackend>("vit_small_patch16_224");
}

/// Full-size matmuls, where Flex's gemm splits the work over threads.
#[test]
fn vit_small_patch16_224_matches_timm_on_flex() {
    check_timm_reference::<FlexBackend>("vit_small_patch16_224");
}

#[test]
fn vit_small_patch32_224_matches_timm() {
    check_timm_reference::<TestBackend>("vit_small_patch32_224");
}

#[test]
fn layerscale_avg_pool_without_qkv_bias_matches_timm() {
    check_timm_reference::<TestBackend>("layerscale_gap_noqkvbias");
}

#[test]
fn position_embedding_resampling_matches_timm() {
    check_timm_reference::<TestBackend>("resample_32_to_48");
}

/// DINOv2's architecture at a small size: patch 14, LayerScale, no head.
#[test]
fn dinov2_matches_timm() {
    check_timm_reference::<TestBackend>("dinov2_tiny");
}

/// DINOv2 with registers: 4 register tokens after the class token, the position embedding on
/// the patches only (`no_embed_class`), resampled from a 4×4 to a 5×5 grid.
#[test]
fn dinov2_with_registers_matches_timm() {
    check_timm_reference::<TestBackend>("dinov2_reg4_tiny");
    check_timm_reference::<TestBackend>("dinov2_reg4_resample_56_to_70");
}

/// A transformers DINOv2 reference: formula weights under the names `save_pretrained` writes.
fn check_hf_dinov2_reference(name: &str) {
    let m = manifest(name);
    let tensors = m["hf_tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, shape)| {
            let shape: Vec<usize> = serde_json::from_value(shape.clone()).unwrap();
            (k.clone(), dmpo_tests::formula::formula_tensor(k, &shape))
        })
        .collect();
    check_reference::<TestBackend>(name, tensors, "model.safetensors");
}

/// transformers' `Dinov2Model`: LayerScale `lambda1`s, `norm1`/`mlp.fc1` names.
#[test]
fn hugging_face_dinov2_matches_transformers() {
    check_hf_dinov2_reference("hf_dinov2_tiny");
}

/// transformers' `Dinov2WithRegistersModel`: registers inserted after the position embedding,
/// whose class-token position is folded into the class token.
#[test]
fn hugging_face_dinov2_with_registers_matches_transformers() {
    check_hf_dinov2_reference("hf_dinov2_reg4_tiny");
}

#[test]
fn hugging_face_layout_matches_transformers() {
    let m = manifest("hf_vit_tiny");
    let hf = &m["hf_config"];
    let get = |k: &str| hf[k].as_u64().unwrap() as usize;
    let cfg = VitConfig::new()
        .with_img_size(get("image_size"))
        .with_patch_size(get("patch_size"))
        .with_embed_dim(get("hidden_size"))
        .with_depth(get("num_hidden_layers"))
        .with_num_heads(get("num_attention_heads"))
        .with_mlp_hidden_dim(get("intermediate_size"))
        .with_num_classes(get("num_labels"));
    let tensors = hf_state_dict(&cfg);
    // The names we write are exactly those transformers' `save_pretrained` writes.
    let mut ours: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
    ours.sort();
    let theirs: Vec<String> = serde_json::from_value(m["hf_keys"].clone()).unwrap();
    assert_eq!(ours, theirs);
    check_reference::<TestBackend>("hf_vit_tiny", tensors, "model.safetensors");
}
