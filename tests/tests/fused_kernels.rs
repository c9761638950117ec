//! The ViT on Flex with dmpo-import's fused kernels installed (what the binaries run) against
//! timm, number for number, and the DMPO and DyT models against the composed path. A file of
//! its own: installing kernels is process-wide, and the other files check the composed path.

use burn::prelude::*;
use dmpo_model::kernels;
use dmpo_tests::FlexBackend;
use dmpo_tests::parity::{check_pico, check_timm_reference};

fn install() {
    dmpo_import::flex_kernels::install();
    assert!(
        kernels::installed::<FlexBackend>().is_some(),
        "DMPO_KERNELS=composed is set: these tests need the fused kernels"
    );
}

#[test]
fn pico_cls_and_gap_match_timm_with_fused_kernels() {
    install();
    check_pico::<FlexBackend>("vit_pico_cls.safetensors", "vit_pico_cls.io.safetensors");
    check_pico::<FlexBackend>("vit_pico_gap.safetensors", "vit_pico_gap.io.safetensors");
}

/// ViT-S/16 at 224: 197 tokens, 6 heads, the row split of the linear kernel over threads.
#[test]
fn vit_small_patch16_224_matches_timm_with_fused_kernels() {
    install();
    check_timm_reference::<FlexBackend>("vit_small_patch16_224");
}

/// DINOv2 with registers: LayerScale, 4 register tokens.
#[test]
fn dinov2_with_registers_matches_timm_with_fused_kernels() {
    install();
    check_timm_reference::<FlexBackend>("dinov2_reg4_tiny");
}

/// The DMPO model with DyT's dispatch (hard gates: real skipping, the MLP on a gathered
/// `[kept, D]` matrix), fused on Flex against the same weights on `Autodiff<Flex>`, which has no
/// kernels installed and so runs Burn's composition.
#[test]
fn dmpo_and_dyt_models_equal_the_composed_path() {
    use burn::backend::Autodiff;
    use burn::module::AutodiffModule;
    use burn::tensor::Distribution;
    use dmpo_model::dmpo::DmpoConfig;
    use dmpo_model::dyt::{Dispatch, DispatchConfig};
    use dmpo_model::vit::VitConfig;

    type AB = Autodiff<FlexBackend>;
    install();
    assert!(kernels::installed::<AB>().is_none());
    for dispatch in [None, Some(DispatchConfig::new())] {
        let dyt = dispatch.is_some();
        let device = Default::default();
        AB::seed(&device, 3);
        let composed = DmpoConfig::new(5)
            .with_dispatch(dispatch)
            .init(VitConfig::tiny().init::<AB>(&device), &device)
            .unwrap();
        let fused = composed.valid();
        let x = Tensor::<FlexBackend, 4>::random([3, 3, 16, 16], Distribution::Default, &device);
        let (reference, _) =
            composed.forward_exits_with(Tensor::from_inner(x.clone()), Dispatch::Hard);
        let (ours, _) = fused.forward_exits_with(x, Dispatch::Hard);
        for (i, (a, b)) in ours.into_iter().zip(reference).enumerate() {
            let worst = (a - b.inner()).abs().max().into_scalar();
            assert!(worst <= 1e-4, "exit {i} (DyT: {dyt}): {worst}");
        }
    }
}
