//! DyT's token dispatch inside the multi-exit model: dispatchers forced open leave the backbone
//! exact, real skipping (gather → MLP → scatter) equals masking the MLP, the prefix tokens are
//! never skipped, and the dispatchers learn through the straight-through gate.

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_model::dmpo::DmpoConfig;
use dmpo_model::dyt::{Dispatch, DispatchConfig, TokenDispatcher};

type B = NdArray;
type AB = Autodiff<NdArray>;

mod common;
use common::{flat, tiny_vit};

fn dyt(classes: usize) -> DmpoConfig {
    DmpoConfig::new(classes).with_dispatch(Some(DispatchConfig::new()))
}

/// Sets every dispatcher's bias, so its logits are all far above (open) or below (shut) 0.
fn set_bias<BB: Backend>(dispatchers: &mut [TokenDispatcher<BB>], value: f32) {
    for d in dispatchers {
        let device = d.proj.weight.device();
        d.proj.bias = Some(Param::from_tensor(Tensor::full([1], value, &device)));
    }
}

#[test]
fn dispatchers_forced_open_equal_the_backbone_bit_for_bit() {
    // Draws weights: not while a seeded test of this file draws.
    let _rng = common::rng_lock();
    let device = Default::default();
    for class_token in [true, false] {
        let backbone = tiny_vit(class_token).init::<B>(&device);
        let x = Tensor::<B, 4>::random([3, 3, 16, 16], Distribution::Default, &device);
        let expected = flat(backbone.forward(x.clone()));
        let mut model = dyt(5).init(backbone, &device).unwrap();
        assert_eq!(model.dispatchers.len(), model.backbone.depth());
        // The complete model (DyT's teacher pass) is the plain model whatever the gates say.
        let (complete, masks) = model.forward_exits_with(x.clone(), Dispatch::Complete);
        assert!(masks.is_empty());
        assert_eq!(flat(complete[3].clone()), expected);
        set_bias(&mut model.dispatchers, 1e4);
        let (open, masks) = model.forward_exits_with(x, Dispatch::Hard);
        assert_eq!(flat(open[3].clone()), expected);
        assert_eq!(masks.len(), model.backbone.depth());
        assert!(
            masks
                .iter()
                .all(|m| flat(m.clone()).iter().all(|&v| v == 1.0))
        );
    }
}

/// Inference gathers the kept tokens of the whole batch into one matrix: it must equal the
/// masked computation (what training does) up to float rounding, on every block.
#[test]
fn real_skipping_equals_masking_the_mlp() {
    let device = Default::default();
    let _rng = common::seeded::<B>(&device, 11);
    let backbone = tiny_vit(true).init::<B>(&device);
    let mut model = dyt(5).init(backbone, &device).unwrap();
    // Larger dispatcher weights than the init's, so about half the tokens are skipped.
    for d in &mut model.dispatchers {
        let w = Tensor::<B, 2>::random(
            d.proj.weight.dims(),
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        d.proj.weight = Param::from_tensor(w);
    }
    let x = model.embed(Tensor::random(
        [4, 3, 16, 16],
        Distribution::Default,
        &device,
    ));
    let mut kept_total = 0.0;
    let mut tokens_total = 0.0;
    for i in 0..model.backbone.depth() {
        let (skipped, keep) = model.forward_block_with(i, x.clone(), Dispatch::Hard);
        let keep = keep.unwrap();
        // The same block computed densely, its MLP output masked.
        let block = &model.backbone.blocks[i];
        let h = block.forward_attention_residual(x.clone());
        let normed = block.norm2.forward(h.clone());
        let mask = model.dispatchers[i]
            .with_prefix(keep.clone())
            .unsqueeze_dim::<3>(2);
        let masked =
            h + block.mlp_branch(normed.clone()) * mask + model.adapters[i].forward(normed);
        let (a, b) = (flat(skipped), flat(masked));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "block {i}: {worst}");
        let k = flat(keep);
        kept_total += k.iter().sum::<f32>();
        tokens_total += k.len() as f32;
    }
    let rate = kept_total / tokens_total;
    assert!(
        rate > 0.1 && rate < 0.9,
        "some tokens skipped, some kept: {rate}"
    );
}

#[test]
fn shut_dispatchers_still_run_the_class_token_through_the_mlp() {
    // Draws weights: not while a seeded test of this file draws.
    let _rng = common::rng_lock();
    let device = Default::default();
    let backbone = tiny_vit(true).init::<B>(&device);
    let mut model = dyt(5).init(backbone, &device).unwrap();
    set_bias(&mut model.dispatchers, -1e4);
    let x = model.embed(Tensor::random(
        [2, 3, 16, 16],
        Distribution::Default,
        &device,
    ));
    let (out, keep) = model.forward_block_with(0, x.clone(), Dispatch::Hard);
    assert!(flat(keep.unwrap()).iter().all(|&v| v == 0.0));
    let (dense, _) = model.forward_block_with(0, x.clone(), Dispatch::Complete);
    let (n, d) = (x.dims()[1], x.dims()[2]);
    let cls = |t: Tensor<B, 3>| flat(t.slice([0..2, 0..1, 0..d]));
    let patches = |t: Tensor<B, 3>| flat(t.slice([0..2, 1..n, 0..d]));
    assert_eq!(
        cls(out.clone()),
        cls(dense.clone()),
        "the class token is always kept"
    );
    assert_ne!(
        patches(out),
        patches(dense),
        "the patch tokens skipped the MLP"
    );
}

#[test]
fn the_dispatchers_learn_through_the_straight_through_gate() {
    let device = Default::default();
    let _rng = common::seeded::<AB>(&device, 5);
    let backbone = tiny_vit(true).init::<AB>(&device);
    let model = dyt(5).init(backbone, &device).unwrap();
    let x = Tensor::<AB, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    // The activation-rate loss alone, and the task loss alone: both reach every dispatcher.
    for use_rate in [true, false] {
        let sampled = Dispatch::Sampled { temperature: 5.0 };
        let (logits, masks) = model.forward_exits_with(x.clone(), sampled);
        assert_eq!(masks.len(), model.backbone.depth());
        let loss = if use_rate {
            let means = masks
                .iter()
                .map(|m| m.clone().mean().reshape([1]))
                .collect();
            Tensor::cat(means, 0).mean().sub_scalar(0.25).powi_scalar(2)
        } else {
            logits.last().unwrap().clone().powi_scalar(2).mean()
        };
        let grads = loss.backward();
        // With a class-token head, the last block's patch tokens reach no exit: only the rate
        // loss moves its dispatcher (DyT reports its activation rate falling to 0).
        let reached = if use_rate {
            model.dispatchers.len()
        } else {
            model.dispatchers.len() - 1
        };
        for (i, d) in model.dispatchers.iter().enumerate().take(reached) {
            let g = flat(d.proj.weight.grad(&grads).expect("a gradient"));
            assert!(
                g.iter().any(|v| *v != 0.0),
                "dispatcher {i}, rate loss {use_rate}"
            );
        }
    }
}

#[test]
fn an_out_of_range_token_rate_is_refused_at_init() {
    // Draws weights: not while a seeded test of this file draws.
    let _rng = common::rng_lock();
    let device = Default::default();
    let backbone = tiny_vit(true).init::<B>(&device);
    let config = DmpoConfig::new(5).with_dispatch(Some(DispatchConfig::new().with_token_rate(1.5)));
    let err = config.init(backbone, &device).unwrap_err();
    assert!(err.to_string().contains("token rate 1.5"), "{err}");
}

#[test]
fn a_skipped_token_saves_its_mlp_macs() {
    // Draws weights: not while a seeded test of this file draws.
    let _rng = common::rng_lock();
    let device = Default::default();
    let backbone = tiny_vit(true).init::<B>(&device);
    let plain = DmpoConfig::new(5).init(backbone.clone(), &device).unwrap();
    let model = dyt(5).init(backbone, &device).unwrap();
    assert_eq!(plain.skipped_token_macs(), 0);
    let [d, hidden] = model.backbone.blocks[0].mlp.fc1.weight.dims();
    assert_eq!(model.skipped_token_macs(), 2 * (d * hidden) as u64);
    // The dispatchers' own cost (one dot product per patch token and block) is counted.
    let extra: u64 = model.stage_costs().iter().map(|c| c.trunk).sum::<u64>()
        - plain.stage_costs().iter().map(|c| c.trunk).sum::<u64>();
    let patches = model.backbone.num_patches() as u64;
    assert_eq!(extra, model.backbone.depth() as u64 * patches * d as u64);
}
