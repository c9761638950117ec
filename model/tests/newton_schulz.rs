//! The covariance predictor's maths: Newton–Schulz square roots against an eigendecomposition,
//! gradients against finite differences, and rank-deficient inputs staying finite.

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use burn::tensor::Distribution;
use dmpo_model::dmpo::{CovarianceHead, newton_schulz_sqrt, upper_triangle};

type F64 = NdArray<f64>;

/// Symmetric eigendecomposition by cyclic Jacobi rotations (reference only, f64).
fn jacobi_sqrt(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    for _ in 0..100 {
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() < 1e-15 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n)
                .map(|k| v[i * n + k] * m[k * n + k].max(0.0).sqrt() * v[j * n + k])
                .sum();
        }
    }
    out
}

#[test]
fn newton_schulz_matches_an_eigendecomposition_square_root() {
    let device = Default::default();
    let n = 8;
    for seed in 0..4 {
        F64::seed(&device, seed);
        // A = XᵀX / tr + 0.05 I, trace-normalised: SPD with eigenvalues in (0, 1].
        let x = Tensor::<F64, 2>::random([16, n], Distribution::Normal(0.0, 1.0), &device);
        let s = x.clone().transpose().matmul(x) + Tensor::eye(n, &device) * 0.05 * 16.0;
        let trace: f64 = (s.clone() * Tensor::eye(n, &device)).sum().into_scalar();
        let a = s / trace;
        let ours = newton_schulz_sqrt(a.clone().unsqueeze::<3>(), 30);
        let ours: Vec<f64> = ours.into_data().to_vec().unwrap();
        let a: Vec<f64> = a.into_data().to_vec().unwrap();
        let reference = jacobi_sqrt(&a, n);
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(o, r)| (o - r).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-3, "seed {seed}: max |diff| {worst}");
    }
}

#[test]
fn upper_triangle_reads_rows_of_the_upper_half() {
    let device = Default::default();
    let m = Tensor::<F64, 1>::from_floats([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &device)
        .reshape([1, 3, 3]);
    let tri: Vec<f64> = upper_triangle(m).into_data().to_vec().unwrap();
    assert_eq!(tri, vec![1.0, 2.0, 3.0, 5.0, 6.0, 9.0]);
}

fn head(device: &burn::tensor::Device<F64>) -> CovarianceHead<Autodiff<F64>> {
    CovarianceHead::new(6, 4, 3, 5, 1, false, 1e-5, device)
}

/// Loss = Σ W ⊙ head(tokens), with W fixed: its gradient w.r.t. the tokens.
fn loss(
    h: &CovarianceHead<Autodiff<F64>>,
    tokens: Tensor<Autodiff<F64>, 3>,
    w: &Tensor<Autodiff<F64>, 3>,
) -> Tensor<Autodiff<F64>, 1> {
    (h.pooled_covariance(tokens) * w.clone()).sum()
}

#[test]
fn gradient_through_covariance_and_square_root_matches_finite_differences() {
    let device = Default::default();
    F64::seed(&device, 7);
    let h = head(&device);
    let w = Tensor::<Autodiff<F64>, 3>::random([1, 4, 4], Distribution::Normal(0.0, 1.0), &device);
    let x = Tensor::<Autodiff<F64>, 3>::random([1, 9, 6], Distribution::Normal(0.0, 1.0), &device);
    let x = x.require_grad();
    let grads = loss(&h, x.clone(), &w).backward();
    let analytic: Vec<f64> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
    let base: Vec<f64> = x.into_data().to_vec().unwrap();
    let eps = 1e-6;
    for i in (0..base.len()).step_by(5) {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::<Autodiff<F64>, 3>::from_data(TensorData::new(v, [1, 9, 6]), &device);
            loss(&h, t, &w).into_scalar()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        let tol = 1e-4 * (1.0 + numeric.abs());
        assert!(
            (numeric - analytic[i]).abs() < tol,
            "element {i}: numeric {numeric}, analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn rank_deficient_and_constant_tokens_give_finite_outputs_and_gradients() {
    let device = Default::default();
    F64::seed(&device, 3);
    let h = head(&device);
    let w = Tensor::<Autodiff<F64>, 3>::ones([2, 4, 4], &device);
    // 3 patch tokens for a 4×4 covariance (rank ≤ 2), and identical tokens (covariance 0).
    let few =
        Tensor::<Autodiff<F64>, 3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let same = Tensor::<Autodiff<F64>, 3>::ones([2, 5, 6], &device);
    for x in [few, same] {
        let x = x.require_grad();
        let logits = h.forward(x.clone());
        let out: Vec<f64> = logits.into_data().to_vec().unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        let grads = loss(&h, x.clone(), &w).backward();
        let g: Vec<f64> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
    }
}
