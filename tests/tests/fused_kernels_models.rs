//! The DMPO model, and with DyT's dispatch (hard gates: real skipping, the MLP on a gathered
//! `[kept, D]` matrix), with Flex's fused kernels against Burn's composition: the same model
//! run before and after installing them. One test in its own file (its own process), since
//! installing is process-wide.

use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_model::dmpo::DmpoConfig;
use dmpo_model::dyt::{Dispatch, DispatchConfig};
use dmpo_model::kernels;
use dmpo_model::vit::VitConfig;
use dmpo_tests::FlexBackend;

#[test]
fn dmpo_and_dyt_models_with_fused_kernels_equal_the_composed_path() {
    let device = Default::default();
    let mut models = Vec::new();
    for dispatch in [None, Some(DispatchConfig::new())] {
        FlexBackend::seed(&device, 3);
        let model = DmpoConfig::new(5)
            .with_dispatch(dispatch)
            .init(VitConfig::tiny().init::<FlexBackend>(&device), &device)
            .unwrap();
        let x = Tensor::<FlexBackend, 4>::random([3, 3, 16, 16], Distribution::Default, &device);
        let (composed, _) = model.forward_exits_with(x.clone(), Dispatch::Hard);
        models.push((model, x, composed));
    }
    assert!(kernels::installed::<FlexBackend>().is_none());
    dmpo_infer::flex_kernels::install();
    assert!(kernels::installed::<FlexBackend>().is_some());
    for (m, (model, x, composed)) in models.into_iter().enumerate() {
        let (fused, _) = model.forward_exits_with(x, Dispatch::Hard);
        for (i, (a, b)) in fused.into_iter().zip(composed).enumerate() {
            let worst = (a - b).abs().max().into_scalar();
            assert!(worst <= 1e-4, "exit {i} (DyT: {}): {worst}", m == 1);
        }
    }
}
