use burn::prelude::*;
use burn::tensor::Int;

/// Square root of a batch of symmetric positive semi-definite matrices whose eigenvalues lie in
/// [0, 1] (e.g. divided by their trace), by coupled Newton–Schulz iterations (iSQRT-COV):
///
/// `Y₀ = A, Z₀ = I;  P = ½(3I − Z·Y);  Y ← Y·P;  Z ← P·Z`
///
/// `Y` → `A^½` and `Z` → `A^-½`. Only matrix products, so it runs fast on every backend and
/// backpropagates through Burn's autodiff, unlike an eigendecomposition. As in iSQRT-COV's
/// code, the first iteration uses `Z₀ = I` without multiplying by it (products with I are
/// exact, so the values are the same) and the last skips `Z`, which nothing reads: 3T − 3
/// products instead of 3T. `a`: `[B, d, d]` → `[B, d, d]`.
pub fn newton_schulz_sqrt<B: Backend>(a: Tensor<B, 3>, iterations: usize) -> Tensor<B, 3> {
    if iterations == 0 {
        return a;
    }
    let [b, d, _] = a.dims();
    // ½(3I − M), on [B, d·d] views (a row broadcast, which every backend runs fast).
    let three_eye = Tensor::<B, 2>::eye(d, &a.device()).reshape([1, d * d]) * 3.0;
    let half_three_eye_minus = |m: Tensor<B, 3>| {
        ((m.reshape([b, d * d]).neg() + three_eye.clone()) * 0.5).reshape([b, d, d])
    };
    let p = half_three_eye_minus(a.clone());
    let mut y = a.matmul(p.clone());
    let mut z = p;
    for i in 1..iterations {
        let p = half_three_eye_minus(z.clone().matmul(y.clone()));
        y = y.matmul(p.clone());
        if i + 1 < iterations {
            z = p.matmul(z);
        }
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
