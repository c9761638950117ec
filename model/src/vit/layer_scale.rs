use burn::module::Param;
use burn::prelude::*;

/// Per-channel learned scale on a residual branch (CaiT / timm `LayerScale`).
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    /// `[D]`, timm's `gamma`.
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    pub fn new(dim: usize, init_value: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::full([dim], init_value, device)),
        }
    }

    /// `x`: `[B, N, D]` → `[B, N, D]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * self.gamma.val().unsqueeze::<3>()
    }
}
