use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::sigmoid;

/// DyT's training gate: `y = σ((z + g₁ − g₂)/τ)` with Gumbel noise (`g₁ − g₂` is logistic, sampled
/// as `log u − log(1 − u)`), rounded at 0.5 in the forward pass while the gradient is `y`'s
/// (straight-through): `m = 1[y > 0.5] − sg(y) + y`. `logits` `[B, N]` → `m` `[B, N]` in {0, 1}.
pub fn straight_through_gate<B: Backend>(logits: Tensor<B, 2>, temperature: f64) -> Tensor<B, 2> {
    let u = logits.random_like(Distribution::Uniform(1e-6, 1.0 - 1e-6));
    let noise = u.clone().log() - u.neg().add_scalar(1.0).log();
    let soft = sigmoid((logits + noise).div_scalar(temperature));
    let hard = soft.clone().greater_elem(0.5).float();
    hard - soft.clone().detach() + soft
}

/// DyT's inference gate: keep a token where its logit is positive (`σ(z) > 0.5`), no noise.
pub fn hard_gate<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 2, Bool> {
    logits.greater_elem(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type A = Autodiff<NdArray>;

    #[test]
    fn forward_is_binary_and_the_gradient_is_the_soft_gate_s() {
        let device = Default::default();
        A::seed(&device, 3);
        let z = Tensor::<A, 2>::from_floats([[-30.0, 30.0, 0.5]], &device).require_grad();
        let m = straight_through_gate(z.clone(), 5.0);
        let values = m.clone().into_data().to_vec::<f32>().unwrap();
        // Far from 0 the noise cannot flip the decision.
        assert_eq!(values[..2], [0.0, 1.0]);
        assert!(values[2] == 0.0 || values[2] == 1.0);
        let grads = m.sum().backward();
        let g = z.grad(&grads).unwrap().to_data().to_vec::<f32>().unwrap();
        // dσ(v/τ)/dz = σ(1 − σ)/τ: about 0 for |z| = 30 at τ = 5, at most 1/(4τ) = 0.05.
        assert!(
            g[0] > 0.0 && g[0] < 1e-2 && g[1] > 0.0 && g[1] < 1e-2,
            "{g:?}"
        );
        assert!(g[2] > 0.0 && g[2] <= 0.05 + 1e-6, "{g:?}");
    }

    #[test]
    fn the_hard_gate_keeps_positive_logits() {
        let device = Default::default();
        let z = Tensor::<NdArray, 2>::from_floats([[-1.0, 0.0, 2.0]], &device);
        let keep = hard_gate(z).into_data().to_vec::<bool>().unwrap();
        assert_eq!(keep, [false, false, true]);
    }
}
