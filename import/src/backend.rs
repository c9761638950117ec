//! The one place a backend is named: chosen by the cargo feature the binary was built with
//! (`cargo xtask ... --backend flex|ndarray|wgpu|cuda`). Library code stays generic: built with
//! no backend feature (a Burn app embedding the library), only the backend-free parts are here.

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
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}

/// Whether the backend runs on a GPU (its device can be missing or run out of memory).
pub const IS_GPU: bool = cfg!(any(feature = "wgpu", feature = "cuda"));

/// The backend could not start on its device: no driver, no adapter, no GPU.
#[derive(Debug, thiserror::Error)]
#[error("{NAME}: the device could not be started ({reason}). {hint}")]
pub struct DeviceError {
    /// What wgpu / CubeCL said, first line only.
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
/// the CPU backends. Call it once, first thing, in a binary.
#[cfg(any(
    feature = "flex",
    feature = "ndarray",
    feature = "wgpu",
    feature = "cuda"
))]
pub fn check_device() -> Result<(), DeviceError> {
    if !IS_GPU {
        return Ok(());
    }
    let device = device();
    let reason = crate::panics::quietly(|| {
        use burn::tensor::Tensor;
        Tensor::<Backend, 1>::ones([1], &device).into_data()
    })
    .err();
    match reason {
        None => Ok(()),
        Some(reason) => Err(DeviceError {
            reason,
            hint: NO_DEVICE_HINT,
        }),
    }
}

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

    #[test]
    fn the_cpu_backends_need_no_device_check() {
        if !IS_GPU {
            check_device().unwrap();
        }
    }
}
