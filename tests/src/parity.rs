//! timm parity checks shared by the test files: a timm fixture or a formula-weight reference,
//! imported and run on any backend, compared block by block.

use std::collections::BTreeMap;

use burn::prelude::*;
use dmpo_import::{ImportOptions, import_checkpoint, read_tensor_file, write_safetensors};
use dmpo_model::vit::{GlobalPool, VitConfig};

use crate::formula::{timm_state_dict, uniform};
use crate::{assert_close, fixture, host};

pub const TOL: f32 = 1e-4;

pub fn check_pico<B: Backend>(model_file: &str, io_file: &str) {
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

/// One entry of `fixtures/references/manifest.json`.
pub fn manifest(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("references/manifest.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all[name].clone()
}

/// The checkpoint architecture described by timm constructor kwargs in the manifest.
pub fn timm_kwargs_config(kw: &serde_json::Value) -> VitConfig {
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

pub fn check_reference<B: Backend>(
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

pub fn check_timm_reference<B: Backend>(name: &str) {
    let cfg = timm_kwargs_config(&manifest(name)["checkpoint"]);
    check_reference::<B>(name, timm_state_dict(&cfg), "model.safetensors");
}
