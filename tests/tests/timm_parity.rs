//! Our ViT against timm and Hugging Face, number for number: the shared timm fixtures (real
//! timm-written `.safetensors` and `.pth`) and formula-weight references for ViT-S/16 at 224,
//! ViT-S/32, LayerScale + avg pooling without qkv bias, position-embedding resampling, DINOv2
//! (with and without registers), and the Hugging Face layout.

use dmpo_model::vit::VitConfig;
use dmpo_tests::formula::hf_state_dict;
use dmpo_tests::parity::{check_pico, check_reference, check_timm_reference, manifest};
use dmpo_tests::{FlexBackend, TestBackend};

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
