//! Building a [`VisionTransformer`] from a timm-layout [`TensorMap`], checking every shape.

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use dmpo_model::vit::{VisionTransformer, VitConfig};

use crate::error::Result;
use crate::infer_config::checkpoint_grid;
use crate::resample::{Resampling, resample_pos_embed};
use crate::tensor_map::{HostTensor, TensorMap};

/// Moves every tensor of `map` into a model of architecture `config`. Each tensor must be
/// present with the shape the architecture implies; any tensor left over is an error. A position
/// embedding trained for another grid is resampled with `resampling`.
pub fn load_vit<B: Backend>(
    config: &VitConfig,
    mut map: TensorMap,
    resampling: Resampling,
    device: &B::Device,
) -> Result<VisionTransformer<B>> {
    let mut model = config.init::<B>(device);
    let d = config.embed_dim;
    let p = config.patch_size;
    let c = config.in_chans;

    let proj = map.take("patch_embed.proj.weight", &[d, c, p, p])?;
    model.patch_embed.proj.weight = param(torch_linear(proj, d, c * p * p), device);
    model.patch_embed.proj.bias = Some(param(map.take("patch_embed.proj.bias", &[d])?, device));

    if let Some(cls) = &mut model.cls_token {
        *cls = param(map.take("cls_token", &[1, 1, d])?, device);
    }
    if let Some(reg) = &mut model.reg_token {
        *reg = param(map.take("reg_token", &[1, config.reg_tokens, d])?, device);
    }
    // The prefix positions the position embedding holds (none with `no_embed_class`).
    let prefix = config.num_embedded_tokens() - config.num_patches();
    let old = checkpoint_grid(&map, prefix);
    let mut pos = map.take("pos_embed", &[1, prefix + old * old, d])?;
    let new = config.grid_size();
    if old != new {
        tracing::info!("resampling position embedding from {old}x{old} to {new}x{new} patches");
        pos = HostTensor::new(
            vec![1, prefix + new * new, d],
            resample_pos_embed(&pos.data, prefix, (old, new), d, resampling),
        );
    }
    model.pos_embed = param(pos, device);

    let h = config.mlp_hidden_dim;
    for (i, block) in model.blocks.iter_mut().enumerate() {
        let key = |name: &str| format!("blocks.{i}.{name}");
        load_norm(&mut block.norm1, &mut map, &key("norm1"), d, device)?;
        load_linear(
            &mut block.attn.qkv,
            &mut map,
            &key("attn.qkv"),
            d,
            3 * d,
            device,
        )?;
        load_linear(
            &mut block.attn.proj,
            &mut map,
            &key("attn.proj"),
            d,
            d,
            device,
        )?;
        load_norm(&mut block.norm2, &mut map, &key("norm2"), d, device)?;
        load_linear(&mut block.mlp.fc1, &mut map, &key("mlp.fc1"), d, h, device)?;
        load_linear(&mut block.mlp.fc2, &mut map, &key("mlp.fc2"), h, d, device)?;
        for (ls, name) in [(&mut block.ls1, "ls1.gamma"), (&mut block.ls2, "ls2.gamma")] {
            if let Some(ls) = ls {
                ls.gamma = param(map.take(&key(name), &[d])?, device);
            }
        }
    }
    if let Some(norm) = &mut model.norm {
        load_norm(norm, &mut map, "norm", d, device)?;
    }
    if let Some(norm) = &mut model.fc_norm {
        load_norm(norm, &mut map, "fc_norm", d, device)?;
    }
    if let Some(head) = &mut model.head {
        load_linear(head, &mut map, "head", d, config.num_classes, device)?;
    }
    map.finish()?;
    Ok(model)
}

fn load_linear<B: Backend>(
    linear: &mut Linear<B>,
    map: &mut TensorMap,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Result<()> {
    let weight = map.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
    linear.weight = param(torch_linear(weight, d_out, d_in), device);
    let bias_key = format!("{prefix}.bias");
    linear.bias = if linear.bias.is_some() {
        Some(param(map.take(&bias_key, &[d_out])?, device))
    } else {
        map.take_optional(&bias_key, &[d_out])?
            .map(|b| param(b, device))
    };
    Ok(())
}

fn load_norm<B: Backend>(
    norm: &mut LayerNorm<B>,
    map: &mut TensorMap,
    prefix: &str,
    d: usize,
    device: &B::Device,
) -> Result<()> {
    norm.gamma = param(map.take(&format!("{prefix}.weight"), &[d])?, device);
    norm.beta = Some(param(map.take(&format!("{prefix}.bias"), &[d])?, device));
    Ok(())
}

/// PyTorch stores a linear map as `[out, in]` (any trailing dims flattened into `in`);
/// Burn's `Linear` wants `[in, out]`.
fn torch_linear(t: HostTensor, d_out: usize, d_in: usize) -> HostTensor {
    let mut data = vec![0f32; d_in * d_out];
    for o in 0..d_out {
        for i in 0..d_in {
            data[i * d_out + o] = t.data[o * d_in + i];
        }
    }
    HostTensor::new(vec![d_in, d_out], data)
}

fn param<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(t.data, t.shape), device))
}
