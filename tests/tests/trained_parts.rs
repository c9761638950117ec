//! Trained add-ons round-trip through their small file, and refuse a different backbone.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_import::{ImportError, TrainedBinding, load_trained, read_binding, save_trained};
use dmpo_model::dmpo::{DmpoConfig, DmpoModel};
use dmpo_model::dyt::DispatchConfig;
use dmpo_model::vit::VitConfig;
use dmpo_tests::{TestBackend, host};

/// A random backbone whose (lazily initialised) parameters are materialised, so that clones
/// share values as a loaded backbone's do.
fn backbone(
    device: &burn::tensor::Device<TestBackend>,
) -> dmpo_model::vit::VisionTransformer<TestBackend> {
    let b = VitConfig::tiny().init::<TestBackend>(device);
    dmpo_import::backbone_fingerprint(&b);
    b
}

/// Stands in for training: perturbs every parameter outside the backbone.
fn perturb(model: DmpoModel<TestBackend>) -> DmpoModel<TestBackend> {
    struct Noise;
    impl ModuleMapper<TestBackend> for Noise {
        fn map_float<const D: usize>(
            &mut self,
            p: Param<Tensor<TestBackend, D>>,
        ) -> Param<Tensor<TestBackend, D>> {
            p.map(|t| {
                let noise = t.random_like(Distribution::Normal(0.0, 0.1));
                t + noise
            })
        }
    }
    let DmpoModel {
        backbone,
        adapters,
        dispatchers,
        dispatch,
        bypasses,
        heads,
        exits,
        detach_exit_inputs,
    } = model;
    DmpoModel {
        backbone,
        adapters: adapters.map(&mut Noise),
        dispatchers: dispatchers.map(&mut Noise),
        dispatch,
        bypasses: bypasses.map(&mut Noise),
        heads: heads.map(&mut Noise),
        exits,
        detach_exit_inputs,
    }
}

#[test]
fn trained_parts_round_trip_onto_the_same_backbone() {
    round_trip(DmpoConfig::new(5));
}

/// DMPO+DyT: the token dispatchers travel with the other add-ons.
#[test]
fn trained_parts_with_token_dispatchers_round_trip() {
    round_trip(DmpoConfig::new(5).with_dispatch(Some(DispatchConfig::new())));
}

fn round_trip(cfg: DmpoConfig) {
    let device = Default::default();
    let backbone = backbone(&device);
    let trained = perturb(cfg.init(backbone.clone(), &device).unwrap());
    let x = Tensor::<TestBackend, 4>::random([2, 3, 16, 16], Distribution::Default, &device);
    let expected: Vec<_> = trained
        .forward_exits(x.clone())
        .into_iter()
        .map(host)
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trained.safetensors");
    let binding = TrainedBinding::new(&cfg, &VitConfig::tiny(), &trained);
    save_trained(&path, &trained, &binding).unwrap();
    assert_eq!(read_binding(&path).unwrap(), binding);

    let fresh = cfg.init(backbone, &device).unwrap();
    let loaded = load_trained(&path, fresh).unwrap();
    let got: Vec<_> = loaded.forward_exits(x).into_iter().map(host).collect();
    assert_eq!(got, expected);

    // Only the add-ons (and the two frozen final norms moved out of the backbone) are stored.
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let counts = trained.param_counts();
    let stored = counts.trainable + 2 * 24;
    assert!(
        size >= 4 * stored && size < 4 * stored + 32_768,
        "{size} bytes for {counts:?}"
    );
}

#[test]
fn trained_parts_refuse_another_backbone() {
    let device = Default::default();
    let cfg = DmpoConfig::new(5);
    let model = cfg.init(backbone(&device), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trained.safetensors");
    save_trained(
        &path,
        &model,
        &TrainedBinding::new(&cfg, &VitConfig::tiny(), &model),
    )
    .unwrap();

    let other = cfg.init(backbone(&device), &device).unwrap();
    let err = load_trained(&path, other).unwrap_err();
    assert!(matches!(err, ImportError::Config { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("trained.safetensors") && msg.contains("another backbone"),
        "{msg}"
    );

    // A safetensors file that is not ours says so.
    let plain = dir.path().join("plain.safetensors");
    dmpo_import::write_safetensors(
        &plain,
        &[("w".into(), dmpo_import::HostTensor::new(vec![1], vec![0.0]))],
    )
    .unwrap();
    let msg = read_binding(&plain).unwrap_err().to_string();
    assert!(msg.contains("not a dmpo-burn trained-parts file"), "{msg}");
}

/// A trained-parts file written before the backbone config gained `reg_tokens` and
/// `no_embed_class` (DINOv2) still loads: the missing settings take their defaults.
#[test]
fn a_binding_written_by_an_older_version_still_reads() {
    let device = Default::default();
    let cfg = DmpoConfig::new(5);
    let trunk = backbone(&device);
    let model = cfg.init(trunk.clone(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trained.safetensors");
    let binding = TrainedBinding::new(&cfg, &VitConfig::tiny(), &model);
    save_trained(&path, &model, &binding).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut old: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["dmpo"]).unwrap();
    for key in ["reg_tokens", "no_embed_class"] {
        old["backbone"]
            .as_object_mut()
            .unwrap()
            .remove(key)
            .unwrap();
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    let metadata = std::collections::HashMap::from([("dmpo".to_string(), old.to_string())]);
    std::fs::write(
        &path,
        safetensors::serialize(tensors, Some(metadata)).unwrap(),
    )
    .unwrap();

    assert_eq!(read_binding(&path).unwrap(), binding);
    load_trained(&path, cfg.init(trunk, &device).unwrap()).unwrap();
}
