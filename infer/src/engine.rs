use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::{ExitPolicy, InferError, MultiExit};

/// One sample's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class: usize,
    /// The exit criterion's value at the exit taken.
    pub confidence: f32,
    /// Index of the exit that answered (0 = first).
    pub exit: usize,
    pub probs: Vec<f32>,
    /// MACs spent on this sample: the trunk up to its exit (less the MLPs of the tokens it
    /// skipped) and every exit head it passed.
    pub macs: u64,
}

/// Runs `images` (`[B, C, H, W]`) through `model` stage by stage. After each exit, samples whose
/// confidence passes `policy` leave with that exit's prediction; the others are gathered into a
/// smaller batch that continues. Results come back in input order. Exits whose threshold is 1.0
/// (never) are not computed at all.
///
/// A policy that does not fit the model (another model's thresholds) or images of a shape the
/// model does not take are an error before any work, never a panic inside the backend.
pub fn run_early_exit<B: Backend, M: MultiExit<B>>(
    model: &M,
    images: Tensor<B, 4>,
    policy: &ExitPolicy,
) -> Result<Vec<Prediction>, InferError> {
    let mut done: Vec<Option<Prediction>> = vec![None; images.dims()[0]];
    run_early_exit_each(model, images, policy, |index, p| done[index] = Some(p))?;
    // `run_early_exit_each` answers every image once, so every slot is filled.
    Ok(done.into_iter().flatten().collect())
}

/// [`run_early_exit`], handing each image's prediction to `on_exit(input index, prediction)`
/// the moment it leaves, before the images still running go on: a server answers an easy
/// image's request while the hard ones of its batch are still in the trunk.
pub fn run_early_exit_each<B: Backend, M: MultiExit<B>>(
    model: &M,
    images: Tensor<B, 4>,
    policy: &ExitPolicy,
    mut on_exit: impl FnMut(usize, Prediction),
) -> Result<(), InferError> {
    let exits = model.num_exits();
    policy.validate(exits).map_err(InferError::Policy)?;
    model
        .check_input(images.dims())
        .map_err(|reason| InferError::Input {
            input: "images".into(),
            reason,
        })?;
    let cost = policy.exit_costs(&model.stage_costs());
    let n = images.dims()[0];
    let device = images.device();
    let mut answered = 0;
    // `alive[row]` = input index of row `row` of the current batch.
    let mut alive: Vec<usize> = (0..n).collect();
    // MACs each input saved so far by skipping tokens (DyT).
    let mut saved = vec![0u64; n];
    let mut x = model.embed(images);
    for (k, &exit_macs) in cost.iter().enumerate() {
        let (h, stage_saved) = model.forward_trunk_counted(k, x);
        for (&index, s) in alive.iter().zip(stage_saved.unwrap_or_default()) {
            saved[index] += s;
        }
        if !policy.evaluates(k, exits) {
            // No sample can leave here: skip the head (its cost is not counted either).
            x = h;
            continue;
        }
        let probs = softmax(model.forward_exit(k, h.clone()), 1);
        let classes = probs.dims()[1];
        let probs: Vec<f32> = probs
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 probabilities");
        let mut keep = Vec::with_capacity(alive.len());
        for (row, &index) in alive.iter().enumerate() {
            let p = &probs[row * classes..(row + 1) * classes];
            let confidence = policy.criterion.confidence(p);
            if policy.exits_at(k, exits, confidence) {
                answered += 1;
                on_exit(
                    index,
                    Prediction {
                        class: argmax(p),
                        confidence,
                        exit: k,
                        probs: p.to_vec(),
                        macs: exit_macs - saved[index],
                    },
                );
            } else {
                keep.push(row);
            }
        }
        if keep.is_empty() {
            break;
        }
        x = if keep.len() == alive.len() {
            h
        } else {
            let rows: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
            let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [keep.len()]), &device);
            h.select(0, rows)
        };
        alive = keep.into_iter().map(|r| alive[r]).collect();
    }
    // The last exit answers every sample still running, so every image was answered; were one
    // not, its caller would wait for it forever: an error, not a silent gap.
    if answered == n {
        Ok(())
    } else {
        Err(InferError::Input {
            input: "images".into(),
            reason: "an image left at no exit (the policy's last exit must answer)".into(),
        })
    }
}

pub(crate) fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}
