//! A hand-edited `model.json` gets an error naming the file and the field: unknown or missing
//! fields, thresholds outside [0, 1], exits out of order, impossible preprocessing.

use dmpo_infer::{Criterion, ExitPolicy, ModelInfo, read_model_info, write_model_info};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::DmpoConfig;
use serde_json::{Value, json};

fn valid_info() -> ModelInfo {
    let mut info = ModelInfo::new(
        DmpoConfig::new(2).with_exits(vec![2, 4]),
        Preprocess::new(16),
        vec!["a".into(), "b".into()],
    );
    info.policy = Some(ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.8],
    });
    info
}

/// The error `read_model_info` gives for the valid file edited by `edit`.
fn error_after(edit: impl FnOnce(&mut Value)) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_model_info(dir.path(), &valid_info()).unwrap();
    let path = dir.path().join("model.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    let msg = read_model_info(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "no path in: {msg}"
    );
    msg
}

#[test]
fn the_valid_file_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    write_model_info(dir.path(), &valid_info()).unwrap();
    assert_eq!(read_model_info(dir.path()).unwrap(), valid_info());
}

#[test]
fn unknown_fields_are_named_even_inside_burn_configs() {
    let msg = error_after(|v| v["budget"] = json!(0.5));
    assert!(
        msg.contains("unknown field") && msg.contains("budget"),
        "{msg}"
    );
    // A misspelt DMPO option would otherwise fall back to its default in silence.
    let msg = error_after(|v| v["dmpo"]["bypas"] = json!(null));
    assert!(msg.contains("unknown field `dmpo.bypas`"), "{msg}");
}

#[test]
fn missing_fields_are_named() {
    let msg = error_after(|v| {
        v.as_object_mut().unwrap().remove("classes");
    });
    assert!(msg.contains("missing field `classes`"), "{msg}");
}

#[test]
fn thresholds_outside_the_unit_range_are_refused() {
    for bad in [json!(1.5), json!(-0.1)] {
        let msg = error_after(|v| v["policy"]["thresholds"] = json!([bad]));
        assert!(msg.contains("outside [0, 1]"), "{msg}");
    }
    let msg = error_after(|v| v["policy"]["thresholds"] = json!([0.5, 0.5]));
    assert!(msg.contains("2 thresholds for 2 exits"), "{msg}");
}

#[test]
fn exits_must_increase() {
    for exits in [json!([4, 2]), json!([2, 2, 4]), json!([0, 4])] {
        let msg = error_after(|v| v["dmpo"]["exits"] = exits);
        assert!(msg.contains("strictly increasing"), "{msg}");
    }
}

#[test]
fn impossible_preprocessing_is_refused() {
    let msg = error_after(|v| v["preprocess"]["std"] = json!([0.5, 0.0, 0.5]));
    assert!(msg.contains("preprocess.std"), "{msg}");
    let msg = error_after(|v| v["preprocess"]["crop_pct"] = json!(1.5));
    assert!(msg.contains("crop_pct"), "{msg}");
}

#[test]
fn a_dyt_model_file_from_before_the_loss_settings_moved_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut info = valid_info();
    info.dmpo.dispatch = Some(dmpo_model::dyt::DispatchConfig::new().with_token_rate(0.6));
    write_model_info(dir.path(), &info).unwrap();
    let path = dir.path().join("model.json");
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let old = json!({"token_rate": 0.6, "temperature": 5.0, "rate_weight": 2.0,
                     "complete_weight": 1.0, "distill_weight": 1.0});
    value["dmpo"]["dispatch"] = old;
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    assert_eq!(read_model_info(dir.path()).unwrap(), info);
    // Any other unknown field there is still named.
    value["dmpo"]["dispatch"]["tokn_rate"] = json!(0.5);
    std::fs::write(&path, serde_json::to_string(&value).unwrap()).unwrap();
    let msg = read_model_info(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("dmpo.dispatch.tokn_rate"), "{msg}");
}
