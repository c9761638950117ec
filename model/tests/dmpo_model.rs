//! The multi-exit model around a frozen backbone: fresh adapters leave the backbone exact,
//! only the add-ons learn, the staged API agrees with the one-shot one, costs are analytic.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_model::dmpo::{DmpoConfig, EarlyHead, ExitHead, vit_block_macs};
use dmpo_model::vit::preset;

type B = NdArray;
type AB = Autodiff<NdArray>;

mod common;
use common::{flat, tiny_vit};

#[test]
fn fresh_model_last_exit_reproduces_the_backbone_exactly() {
    let device = Default::default();
    for class_token in [true, false] {
        let vit = tiny_vit(class_token).init::<B>(&device);
        let x = Tensor::<B, 4>::random([3, 3, 16, 16], Distribution::Default, &device);
        let expected = flat(vit.forward(x.clone()));
        for cfg in [DmpoConfig::new(5), DmpoConfig::baseline(5)] {
            let model = cfg.init(vit.clone(), &device).unwrap();
            let exits = model.forward_exits(x.clone());
            assert_eq!(exits.len(), 4);
            assert_eq!(flat(exits[3].clone()), expected);
            for e in &exits {
                assert_eq!(e.dims(), [3, 5]);
            }
        }
    }
}

/// DINOv2-style backbones: register tokens after the class token, no position embedding for
/// prefix tokens. The exits (covariance heads on the patch tokens) skip all five prefix tokens.
#[test]
fn a_backbone_with_registers_gets_exits_that_skip_them() {
    let device = Default::default();
    let config = tiny_vit(true)
        .with_reg_tokens(4)
        .with_no_embed_class(true)
        .with_init_values(Some(1e-5));
    assert_eq!(
        (config.num_tokens(), config.num_embedded_tokens()),
        (21, 16)
    );
    let vit = config.init::<B>(&device);
    let x = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    assert_eq!(vit.embed(x.clone()).dims(), [2, 21, 24]);
    let expected = flat(vit.forward(x.clone()));
    let model = DmpoConfig::new(5).init(vit, &device).unwrap();
    let exits = model.forward_exits(x);
    assert_eq!(flat(exits[3].clone()), expected);
    for e in &exits {
        assert!(flat(e.clone()).iter().all(|v| v.is_finite()));
    }
}

#[test]
fn staged_forward_on_a_subset_matches_the_full_batch() {
    let device = Default::default();
    let model = DmpoConfig::new(5)
        .init(tiny_vit(true).init::<B>(&device), &device)
        .unwrap();
    let x = Tensor::<B, 4>::random([4, 3, 16, 16], Distribution::Default, &device);
    let full = model.forward_exits(x.clone());
    let (h, first) = model.forward_stage(0, model.embed(x));
    assert_eq!(flat(first), flat(full[0].clone()));
    // Continue only samples 1 and 3.
    let keep = Tensor::<B, 1, Int>::from_ints([1, 3], &device);
    let (_, second) = model.forward_stage(1, h.select(0, keep.clone()));
    let expected = flat(full[1].clone().select(0, keep));
    for (a, b) in flat(second).iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

/// Every parameter's values, in visiting order, split into frozen and trainable.
fn snapshot<BB: Backend>(m: &impl Module<BB>) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    struct Snap(Vec<Vec<f32>>, Vec<Vec<f32>>);
    impl<BB: Backend> ModuleVisitor<BB> for Snap {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<BB, D>>) {
            let v = flat(p.val());
            if p.is_require_grad() {
                self.1.push(v)
            } else {
                self.0.push(v)
            }
        }
    }
    let mut s = Snap(Vec::new(), Vec::new());
    m.visit(&mut s);
    (s.0, s.1)
}

#[test]
fn an_optimiser_step_changes_only_the_trainable_parts() {
    let device = Default::default();
    let model = DmpoConfig::new(5)
        .init(tiny_vit(true).init::<AB>(&device), &device)
        .unwrap();
    let (frozen_before, trainable_before) = snapshot(&model);
    assert!(!frozen_before.is_empty() && !trainable_before.is_empty());
    let x = Tensor::<AB, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    let loss = model
        .forward_exits(x)
        .into_iter()
        .map(|l| l.powf_scalar(2.0).mean())
        .reduce(|a, b| a + b)
        .unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamWConfig::new().init().step(1e-2, model, grads);
    let (frozen_after, trainable_after) = snapshot(&model);
    assert_eq!(frozen_before, frozen_after, "a frozen parameter moved");
    let changed = trainable_before
        .iter()
        .zip(&trainable_after)
        .filter(|(a, b)| a != b)
        .count();
    // Adapters' down-projections get no gradient while their up-projections are still zero.
    assert!(
        changed >= trainable_before.len() / 2,
        "{changed} of {} changed",
        trainable_before.len()
    );
}

#[test]
fn trainable_parameters_are_a_small_fraction_of_vit_b() {
    let device = Default::default();
    let vit = preset("vit_base_patch16_224")
        .unwrap()
        .with_num_classes(100)
        .init::<B>(&device);
    let model = DmpoConfig::new(100).init(vit, &device).unwrap();
    let counts = model.param_counts();
    let fraction = counts.trainable as f64 / counts.total as f64;
    assert!(counts.total > 85_000_000, "{counts:?}");
    assert!(
        fraction > 0.005 && fraction < 0.03,
        "{counts:?}: {fraction}"
    );

    // Costs, fvcore convention: block 1.454 G, model 17.56 G, covariance head ~15 M.
    assert_eq!(vit_block_macs(197, 768, 3072), 1_453_954_560);
    let full = model.backbone_macs() as f64 / 1e9;
    assert!((full - 17.56).abs() < 0.01, "{full}");
    let costs = model.stage_costs();
    assert_eq!(costs.len(), 4);
    let cov = match &model.heads[0] {
        ExitHead::Covariance(_) => costs[0].exit as f64 / 1e6,
        ExitHead::Linear(_) => panic!("early exit should be a covariance head"),
    };
    let bypass = 2.0 * 197.0 * 768.0 * 64.0 / 1e6;
    assert!((cov - bypass - 14.5).abs() < 0.6, "{cov}");
    let trunk: u64 = costs.iter().map(|c| c.trunk).sum();
    let adapters = 12 * 2 * 197 * 768 * 16;
    assert_eq!(trunk, model.backbone_macs() - 768 * 100 + adapters);
}

#[test]
fn the_baseline_has_no_bypass_and_linear_heads() {
    let device = Default::default();
    let model = DmpoConfig::baseline(5)
        .with_exits(vec![2, 4])
        .init(tiny_vit(true).init::<B>(&device), &device)
        .unwrap();
    assert!(model.bypasses.iter().all(Option::is_none));
    assert!(model.heads.iter().all(|h| matches!(h, ExitHead::Linear(_))));
    let bad = DmpoConfig::new(5)
        .with_exits(vec![2, 3])
        .init(tiny_vit(true).init::<B>(&device), &device);
    assert!(bad.unwrap_err().to_string().contains("last exit"));
    assert_eq!(DmpoConfig::new(5).early_head, EarlyHead::Covariance);
}
