//! The binary built for wgpu (`cargo test -p dmpo-cli --no-default-features --features wgpu,tui
//! --test wgpu_cli`; .ci/run does). Without the feature this file is empty.
#![cfg(feature = "wgpu")]

/// Without a Vulkan driver (the loader pointed at none), a task fails with one line that names
/// the backend and what to install, not a panic from inside wgpu.
#[cfg(target_os = "linux")]
#[test]
fn no_vulkan_driver_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dmpo"))
        .args(["train", "--epochs", "1", "--out"])
        .arg(dir.path().join("run"))
        .env("VK_ICD_FILENAMES", dir.path().join("no-driver.json"))
        .env("VK_DRIVER_FILES", dir.path().join("no-driver.json"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("wgpu: the device could not be started")
            && errors[0].contains("mesa-vulkan-drivers")
            && errors[0].contains("--backend flex"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.path().join("run").exists(),
        "nothing written before the check"
    );
}
