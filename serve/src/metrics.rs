//! What `GET /metrics` reports, in Prometheus' text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExitLabel {
    /// 1-based, as the API reports it.
    pub exit: u32,
}

/// The server's counters; cheap to update from any thread.
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    pub exits: Family<ExitLabel, Counter>,
    pub macs: Counter,
    pub latency: Histogram,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dmpo");
        let requests = Family::<StatusLabel, Counter>::default();
        let exits = Family::<ExitLabel, Counter>::default();
        let macs = Counter::default();
        // 0.5 ms .. ~16 s.
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        // 1, 2, 4, .. 512 images.
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let queue_depth = Gauge::default();
        registry.register(
            "requests",
            "HTTP requests to /v1/classify by status code",
            requests.clone(),
        );
        registry.register(
            "images",
            "Images answered, by the exit they left at",
            exits.clone(),
        );
        registry.register(
            "image_macs",
            "Multiply-accumulates spent on answered images",
            macs.clone(),
        );
        registry.register(
            "image_latency_seconds",
            "Per image: time from admission to its answer (queue and model)",
            latency.clone(),
        );
        registry.register(
            "batch_size",
            "Images per forward pass of the model",
            batch_size.clone(),
        );
        registry.register(
            "queue_depth",
            "Images admitted and not yet answered",
            queue_depth.clone(),
        );
        Self {
            registry,
            requests,
            exits,
            macs,
            latency,
            batch_size,
            queue_depth,
        }
    }

    pub fn count_request(&self, status: u16) {
        self.requests.get_or_create(&StatusLabel { status }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
