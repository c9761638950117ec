use burn::prelude::*;
use burn::tensor::Int;

/// Square root of a batch of symmetric positive semi-definite matrices whose eigenvalues lie in
/// [0, 1] (e.g. divided by their trace), by coupled Newton–Schulz iterations (iSQRT-COV):
///
/// `Y₀ = A, Z₀ = I;  P = ½(3I − Z·Y);  Y ← Y·P;  Z ← P·Z`
///
/// `Y` → `A^½` and `Z` → `A^-½`. Only matrix products, so it runs fast on every backend and
/// backpropagates through Burn's autodiff, unlike an eigendecomposition.
/// `a`: `[B, d, d]` → `[B, d, d]`.
pub fn newton_schulz_sqrt<B: Backend>(a: Tensor<B, 3>, iterations: usize) -> Tensor<B, 3> {
    let [b, d, _] = a.dims();
    let eye = Tensor::<B, 2>::eye(d, &a.device())
        .unsqueeze::<3>()
        .expand([b, d, d]);
    let three_eye = eye.clone() * 3.0;
    let (mut y, mut z) = (a, eye);
    for _ in 0..iterations {
        let p = (three_eye.clone() - z.clone().matmul(y.clone())) * 0.5;
        y = y.matmul(p.clone());
        z = p.matmul(z);
    }
    y
}

/// The upper triangle (diagonal included) of each `[d, d]` matrix, row by row:
/// `[B, d, d]` → `[B, d(d+1)/2]`. A symmetric matrix holds nothing more.
pub fn upper_triangle<B: Backend>(m: Tensor<B, 3>) -> Tensor<B, 2> {
    let [b, d, _] = m.dims();
    let indices: Vec<i64> = (0..d)
        .flat_map(|i| (i..d).map(move |j| (i * d + j) as i64))
        .collect();
    let n = indices.len();
    let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(indices, [n]), &m.device());
    m.reshape([b, d * d]).select(1, indices)
}
