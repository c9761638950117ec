//! The one place a backend is named: chosen by the cargo feature the binary was built with
//! (`cargo xtask ... --backend flex|ndarray|wgpu|cuda`). Library code stays generic.

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

pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}
