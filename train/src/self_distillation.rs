use burn::config::Config;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Self-distillation from the last exit into the early ones (BYOT, LGViT): each early exit also
/// matches the last exit's softened prediction, whose "dark knowledge" (which wrong classes are
/// near) a 2,000-image training set cannot give through hard labels alone.
///
/// Early exit k's loss becomes `(1 − α)·CE(ŷ_k, y) + α·T²·KL(softmax(z_K/T) ‖ softmax(z_k/T))`;
/// the teacher logits `z_K` are detached, so distillation never bends the last exit. The last
/// exit keeps plain cross-entropy. `α = 0` turns it off.
#[derive(Config, Debug, PartialEq)]
pub struct SelfDistillation {
    /// Share α of the distillation term in each early exit's loss, in [0, 1].
    #[config(default = 0.0)]
    pub weight: f64,
    /// Softening temperature T (> 0).
    #[config(default = 2.0)]
    pub temperature: f64,
}

impl SelfDistillation {
    /// Off: plain cross-entropy at every exit.
    pub fn off() -> Self {
        Self::new()
    }

    pub fn is_on(&self) -> bool {
        self.weight > 0.0
    }

    /// Checks α ∈ [0, 1] and T > 0, in words a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(format!(
                "the self-distillation weight must be in [0, 1], got {}",
                self.weight
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(format!(
                "the self-distillation temperature must be > 0, got {}",
                self.temperature
            ));
        }
        Ok(())
    }

    /// One early exit's loss from its cross-entropy, its logits and the last exit's logits
    /// (both `[batch, classes]`).
    pub fn early_exit_loss<B: Backend>(
        &self,
        cross_entropy: Tensor<B, 1>,
        student: Tensor<B, 2>,
        teacher: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        if !self.is_on() {
            return cross_entropy;
        }
        let t = self.temperature;
        let kl = kl_to_teacher(student, teacher, t);
        cross_entropy * (1.0 - self.weight) + kl * (self.weight * t * t)
    }
}

/// `KL(softmax(z_t/T) ‖ softmax(z_s/T))` averaged over the batch, the teacher's logits detached
/// (`[batch, classes]` each).
pub(crate) fn kl_to_teacher<B: Backend>(
    student: Tensor<B, 2>,
    teacher: Tensor<B, 2>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [batch, _] = student.dims();
    let teacher_log = log_softmax(teacher.detach() / temperature, 1);
    let student_log = log_softmax(student / temperature, 1);
    // KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s).
    (teacher_log.clone().exp() * (teacher_log - student_log))
        .sum()
        .div_scalar(batch as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn logits(values: [[f32; 3]; 2]) -> Tensor<B, 2> {
        Tensor::from_data(values, &Default::default())
    }

    #[test]
    fn off_leaves_the_cross_entropy_alone() {
        let ce = Tensor::<B, 1>::from_data([0.7f32], &Default::default());
        let out = SelfDistillation::off().early_exit_loss(
            ce,
            logits([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
            logits([[0.0, 0.0, 5.0], [5.0, 0.0, 0.0]]),
        );
        assert_eq!(out.into_scalar(), 0.7);
    }

    #[test]
    fn the_distillation_term_is_zero_when_student_equals_teacher_and_grows_apart() {
        let sd = SelfDistillation::new()
            .with_weight(1.0)
            .with_temperature(2.0);
        let ce = Tensor::<B, 1>::from_data([3.0f32], &Default::default());
        let same = logits([[1.0, 2.0, 0.5], [0.0, -1.0, 4.0]]);
        let equal = sd
            .early_exit_loss(ce.clone(), same.clone(), same.clone())
            .into_scalar();
        assert!(equal.abs() < 1e-6, "KL(p‖p) = {equal}");
        let apart = sd
            .early_exit_loss(ce, logits([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]), same)
            .into_scalar();
        assert!(apart > 0.1, "KL of different predictions = {apart}");
    }

    #[test]
    fn the_mix_matches_a_hand_computed_value() {
        // Student uniform over 2 classes, teacher (1, 0) at T = 1:
        // KL = 1·(ln 1 − ln ½) = ln 2; loss = ½·CE + ½·ln 2.
        let sd = SelfDistillation::new()
            .with_weight(0.5)
            .with_temperature(1.0);
        let ce = Tensor::<B, 1>::from_data([1.0f32], &Default::default());
        let student = Tensor::<B, 2>::from_data([[0.0f32, 0.0]], &Default::default());
        let teacher = Tensor::<B, 2>::from_data([[100.0f32, 0.0]], &Default::default());
        let out = sd.early_exit_loss(ce, student, teacher).into_scalar();
        assert!((out - (0.5 + 0.5 * 2f32.ln())).abs() < 1e-5, "{out}");
    }

    #[test]
    fn bad_settings_are_refused_in_words() {
        assert!(SelfDistillation::new().with_weight(1.5).validate().is_err());
        assert!(
            SelfDistillation::new()
                .with_temperature(0.0)
                .validate()
                .is_err()
        );
        assert!(SelfDistillation::new().with_weight(0.5).validate().is_ok());
    }
}
