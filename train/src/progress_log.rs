//! Progress as log lines, for runs that are not on a terminal (CI, `nohup`, pipes), where
//! Burn's dashboard cannot draw and its plain renderer prints every iteration.

use std::collections::HashMap;

use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};

/// Logs one line per tenth of an epoch with the metrics averaged over that tenth, and the
/// validation metrics averaged over the epoch at its end.
#[derive(Default)]
pub struct ProgressLog {
    names: Vec<(MetricId, String)>,
    /// Sum and count of each metric's batch values since the last line.
    train: HashMap<MetricId, (f64, usize)>,
    valid: HashMap<MetricId, (f64, usize)>,
    last_decile: Option<(usize, usize)>,
    valid_epoch: Option<usize>,
}

impl ProgressLog {
    fn line(&self, values: &HashMap<MetricId, (f64, usize)>) -> String {
        self.names
            .iter()
            .filter_map(|(id, name)| {
                values
                    .get(id)
                    .map(|(sum, n)| format!("{name} {:.4}", sum / (*n).max(1) as f64))
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn add(values: &mut HashMap<MetricId, (f64, usize)>, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state {
            let slot = values.entry(entry.metric_id).or_insert((0.0, 0));
            slot.0 += value.current();
            slot.1 += 1;
        }
    }
}

impl MetricsRendererTraining for ProgressLog {
    fn update_train(&mut self, state: MetricState) {
        Self::add(&mut self.train, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::add(&mut self.valid, state);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let Some(p) = item.progress else { return };
        let epoch = item.global_progress.items_processed;
        let decile = 10 * p.items_processed / p.items_total.max(1);
        if self.last_decile != Some((epoch, decile)) {
            self.last_decile = Some((epoch, decile));
            tracing::info!(
                "train epoch {epoch}/{} {:>3}%: {}",
                item.global_progress.items_total,
                10 * decile,
                self.line(&self.train)
            );
            self.train.clear();
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if done && self.valid_epoch != Some(epoch) {
            self.valid_epoch = Some(epoch);
            tracing::info!("valid epoch {epoch}: {}", self.line(&self.valid));
            self.valid.clear();
        }
    }
}

impl MetricsRendererEvaluation for ProgressLog {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _: Vec<ProgressType>) {}
}

impl MetricsRenderer for ProgressLog {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.push((definition.metric_id, definition.name));
        self.names.sort_by(|a, b| a.1.cmp(&b.1));
    }
}
