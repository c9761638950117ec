//! What the Learner shows live: the weighted loss, and each exit's loss and accuracy.

use burn::prelude::*;
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};

/// The output of a train or validation step.
#[derive(Debug, Clone)]
pub struct MultiExitOutput<B: Backend> {
    /// The weighted loss `Σ w_k CE_k`, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Each exit's cross-entropy, `[1]` each.
    pub exit_losses: Vec<Tensor<B, 1>>,
    /// Each exit's logits, `[B, classes]`.
    pub logits: Vec<Tensor<B, 2>>,
    pub targets: Tensor<B, 1, Int>,
}

/// The same, read back to the host once per step, for the metrics.
#[derive(Debug, Clone)]
pub struct HostExits {
    pub loss: f64,
    pub exit_losses: Vec<f64>,
    /// Per exit, the predicted class of each sample.
    pub predicted: Vec<Vec<i64>>,
    pub targets: Vec<i64>,
}

impl<B: Backend> ItemLazy for MultiExitOutput<B> {
    type ItemSync = HostExits;

    fn sync(self) -> HostExits {
        let scalar =
            |t: Tensor<B, 1>| t.into_data().convert::<f64>().to_vec::<f64>().expect("f64")[0];
        HostExits {
            loss: scalar(self.loss),
            exit_losses: self.exit_losses.into_iter().map(scalar).collect(),
            predicted: self
                .logits
                .into_iter()
                .map(|l| {
                    let n = l.dims()[0];
                    l.argmax(1)
                        .reshape([n])
                        .into_data()
                        .convert::<i64>()
                        .to_vec()
                        .expect("i64")
                })
                .collect(),
            targets: self
                .targets
                .into_data()
                .convert::<i64>()
                .to_vec()
                .expect("i64"),
        }
    }
}

impl Adaptor<HostExits> for HostExits {
    fn adapt(&self) -> HostExits {
        self.clone()
    }
}

/// What a metric reads off a step.
#[derive(Debug, Clone, Copy)]
pub enum ExitMetricKind {
    /// The weighted multi-exit loss.
    WeightedLoss,
    /// Exit k's cross-entropy.
    Loss(usize),
    /// Exit k's top-1 accuracy (%).
    Accuracy(usize),
}

/// One number per step for the Learner's dashboard and logs.
#[derive(Clone)]
pub struct ExitMetric {
    kind: ExitMetricKind,
    name: MetricName,
    state: NumericMetricState,
}

impl ExitMetric {
    pub fn new(kind: ExitMetricKind) -> Self {
        let name = match kind {
            ExitMetricKind::WeightedLoss => "Loss".to_string(),
            ExitMetricKind::Loss(k) => format!("Loss exit {}", k + 1),
            ExitMetricKind::Accuracy(k) => format!("Accuracy exit {}", k + 1),
        };
        Self {
            kind,
            name: MetricName::new(name),
            state: NumericMetricState::new(),
        }
    }
}

impl Metric for ExitMetric {
    type Input = HostExits;

    fn update(&mut self, item: &HostExits, _metadata: &MetricMetadata) -> SerializedEntry {
        let n = item.targets.len();
        let (value, format) = match self.kind {
            ExitMetricKind::WeightedLoss => {
                (item.loss, FormatOptions::new(self.name()).precision(4))
            }
            ExitMetricKind::Loss(k) => (
                item.exit_losses[k],
                FormatOptions::new(self.name()).precision(4),
            ),
            ExitMetricKind::Accuracy(k) => {
                let right = item.predicted[k]
                    .iter()
                    .zip(&item.targets)
                    .filter(|(p, t)| p == t)
                    .count();
                (
                    100.0 * right as f64 / n.max(1) as f64,
                    FormatOptions::new(self.name()).unit("%").precision(2),
                )
            }
        };
        self.state.update(value, n, format)
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        let accuracy = matches!(self.kind, ExitMetricKind::Accuracy(_));
        NumericAttributes {
            unit: accuracy.then(|| "%".to_string()),
            higher_is_better: accuracy,
        }
        .into()
    }
}

impl Numeric for ExitMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Names of the metrics registered for a model with `exits` exits, in order.
pub fn metric_kinds(exits: usize) -> Vec<ExitMetricKind> {
    let mut kinds = vec![ExitMetricKind::WeightedLoss];
    kinds.extend((0..exits).map(ExitMetricKind::Accuracy));
    kinds.extend((0..exits).map(ExitMetricKind::Loss));
    kinds
}
