//! The one place a backend is named: chosen by the cargo feature this crate is built with
//! (`cargo xtask ... --backend flex|ndarray|wgpu|cuda` picks it for the binary; an app picks it
//! in its Cargo.toml). Everything else stays generic: built with no backend feature (a Burn app
//! bringing its own backend), only the backend-free parts are here.

#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type Backend = burn::backend::Wgpu;
#[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
pub type Backend = burn::backend::Flex;
#[cfg(all(
    feature = "ndarray",
    not(any(feature = "flex", feature = "wgpu", feature = "cuda"))
))]
pub type Backend = burn::backend::NdArray;

/// The backend's name, for logs and reports.
pub const NAME: &str = if cfg!(feature = "cuda") {
    "cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else if cfg!(feature = "flex") {
    "flex"
} else {
    "ndarray"
};

#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
/// The backend's default device; on Flex, also installs the fused CPU kernels
/// ([`crate::flex_kernels`]) the first time.
pub fn device() -> burn::tensor::Device<Backend> {
    #[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
    crate::flex_kernels::install();
    Default::default()
}

/// The devices of `--devices`: CUDA's GPUs by index, or one of wgpu's discrete GPUs by index
/// (each started and checked like [`check_device`]). The CPU backends have one device only.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
pub fn devices(ids: &[usize]) -> Result<Vec<burn::tensor::Device<Backend>>, DeviceError> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = ids.iter().find(|&&i| !seen.insert(i)) {
        return Err(DeviceError {
            reason: format!("device {twice} is listed twice in --devices"),
            hint: "name each device once.",
        });
    }
    #[cfg(feature = "cuda")]
    let devices: Vec<_> = ids
        .iter()
        .map(|&i| burn::backend::cuda::CudaDevice { index: i })
        .collect();
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    let devices: Vec<_> = {
        // Data-parallel steps move the model to every device and the gradients back; CubeCL
        // 0.10 (Burn 0.21) implements tensor transfers between devices for CUDA only, and on
        // wgpu they end in `unimplemented!()` inside a worker thread.
        if ids.len() > 1 {
            return Err(DeviceError {
                reason: format!(
                    "--devices {}: Burn 0.21 cannot move tensors between two wgpu devices",
                    ids.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                hint: "data-parallel training needs --backend cuda; on wgpu pick one GPU \
                       (--devices N).",
            });
        }
        ids.iter()
            .map(|&i| burn::backend::wgpu::WgpuDevice::DiscreteGpu(i))
            .collect()
    };
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    let devices: Vec<burn::tensor::Device<Backend>> = {
        if ids != [0] {
            return Err(DeviceError {
                reason: format!("--devices {ids:?}: the CPU has one device (0)"),
                hint: "data-parallel training needs a GPU backend: --backend cuda or wgpu; \
                       the CPU backend already uses every core on its one device.",
            });
        }
        vec![device()]
    };
    for (id, device) in ids.iter().zip(&devices) {
        start(device).map_err(|reason| DeviceError {
            reason: format!("device {id} could not be started ({reason})"),
            hint: NO_DEVICE_HINT,
        })?;
    }
    Ok(devices)
}

/// Starts `device` with one tiny operation; the panic's first line if it cannot.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
fn start(device: &burn::tensor::Device<Backend>) -> Result<(), String> {
    if !IS_GPU {
        return Ok(());
    }
    crate::panics::quietly(|| {
        use burn::tensor::Tensor;
        Tensor::<Backend, 1>::ones([1], device).into_data()
    })
    .map(drop)
}

/// The device the backend runs on, in words, for the log line every task starts with: the CPU
/// and its threads, wgpu's adapter (once [`check_device`] has set it up), or the CUDA device.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
pub fn describe_device() -> String {
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    if let Some(adapter) = ADAPTER.get() {
        return format!("{:?} on {adapter}", device());
    }
    if IS_GPU {
        return format!("{:?}", device());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
    let threads = format!(
        "{} threads on {cores} cores, fused kernels {}",
        rayon::current_num_threads(),
        if crate::flex_kernels::installed() {
            "on"
        } else {
            "off (DMPO_KERNELS=composed)"
        }
    );
    #[cfg(not(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda")))))]
    let threads = format!("{cores} cores");
    format!("CPU, {threads}")
}

/// Whether the backend runs on a GPU (its device can be missing or run out of memory).
pub const IS_GPU: bool = cfg!(any(feature = "wgpu", feature = "cuda"));

/// The backend could not start on its device (no driver, no adapter, no GPU), or cannot use
/// the devices asked for.
#[derive(Debug, thiserror::Error)]
#[error("{NAME}: {reason}. {hint}")]
pub struct DeviceError {
    /// What went wrong, with wgpu's / CubeCL's words (first line only).
    pub reason: String,
    /// What the user can do about it.
    pub hint: &'static str,
}

/// What to do when the backend's device is missing.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
const NO_DEVICE_HINT: &str = if cfg!(feature = "cuda") {
    "Check that an NVIDIA GPU and its driver are present (`nvidia-smi`), or build for another \
     backend: `--backend wgpu` or `--backend flex` (the CPU)."
} else {
    "wgpu needs a Vulkan, Metal or DX12 driver: install your GPU's Vulkan driver; on a machine \
     without a GPU, Mesa's software one works (Debian/Ubuntu: `apt-get install \
     mesa-vulkan-drivers`), or build for the CPU: `--backend flex`."
};

/// Starts the backend on its device with one tiny operation, so that a missing driver or GPU
/// is one clear error before any work, not a panic from deep inside wgpu or CubeCL. Free on
/// the CPU backends (where Flex's fused kernels are installed). Call it once, first thing, in
/// a binary.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
pub fn check_device() -> Result<(), DeviceError> {
    #[cfg(all(feature = "flex", not(any(feature = "wgpu", feature = "cuda"))))]
    crate::flex_kernels::install();
    if !IS_GPU {
        return Ok(());
    }
    // On wgpu the device is set up here, explicitly, with the options Burn would use, so that
    // the adapter it picked can be named (`describe_device`); on CUDA, one tiny operation.
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    if ADAPTER.get().is_some() {
        return Ok(());
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    let started = crate::panics::quietly(|| {
        use burn::backend::wgpu::{RuntimeOptions, graphics::AutoGraphicsApi, init_setup};
        let setup = init_setup::<AutoGraphicsApi>(&device(), RuntimeOptions::default());
        let info = setup.adapter.get_info();
        let _ = ADAPTER.set(format!(
            "{} ({:?}, {:?}, driver {} {})",
            info.name, info.device_type, info.backend, info.driver, info.driver_info
        ));
    });
    #[cfg(not(all(feature = "wgpu", not(feature = "cuda"))))]
    let started = start(&device()).map(drop);
    started.map_err(|reason| DeviceError {
        reason: format!("the device could not be started ({reason})"),
        hint: NO_DEVICE_HINT,
    })
}

/// The wgpu adapter [`check_device`] set the device up on, in words.
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
static ADAPTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The one line for a GPU that ran out of memory in the middle of the work, if `message` (a
/// panic's, whole) says so: CubeCL and wgpu panic rather than return an error there.
pub fn out_of_memory_line(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    let oom = [
        "out of memory",
        "out-of-memory",
        "outofmemory",
        "out_of_memory",
    ]
    .iter()
    .any(|p| lower.contains(p));
    (IS_GPU && oom).then(|| {
        format!(
            "{NAME}: out of GPU memory. Lower --batch (or --workers' prefetch, or the image \
             size); checkpoints already written are kept, so `--resume` continues a training run."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_recognised_on_gpu_backends_only() {
        let cubecl = "An out-of-memory error happened during launch\nCaused by:\n  alloc";
        assert_eq!(out_of_memory_line(cubecl).is_some(), IS_GPU);
        assert!(out_of_memory_line("index out of bounds: the len is 3").is_none());
        assert!(out_of_memory_line("zoom into the room").is_none());
    }

    #[cfg(any(
        feature = "flex",
        feature = "ndarray",
        feature = "wgpu",
        feature = "cuda"
    ))]
    #[test]
    fn a_device_listed_twice_is_refused_before_any_is_started() {
        let err = devices(&[0, 0]).unwrap_err().to_string();
        assert!(err.contains("device 0 is listed twice"), "{err}");
    }

    #[test]
    fn the_cpu_backends_need_no_device_check() {
        if !IS_GPU {
            check_device().unwrap();
        }
    }
}
