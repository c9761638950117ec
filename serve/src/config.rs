use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServeError;

/// How the server listens, batches, admits and limits requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeConfig {
    /// Where to listen (`127.0.0.1:8080` by default: loopback only, put a proxy in front to
    /// expose it).
    pub addr: SocketAddr,
    /// The budget a request that names none runs at, a fraction of the backbone's MACs among
    /// those calibrated in the model folder; `None`: the model's default one.
    pub budget: Option<f64>,
    /// At most this many images per forward pass.
    pub max_batch: usize,
    /// How long the first image of a batch waits for others to join it, in milliseconds (0:
    /// a batch is whatever has arrived when the model is free).
    pub max_wait_ms: u64,
    /// Images admitted and not yet answered, at most; beyond that a request is refused with
    /// `503` at once rather than queued without bound.
    pub queue: usize,
    /// Largest request body, in bytes (`413` beyond it).
    pub max_body_bytes: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            budget: None,
            max_batch: 32,
            max_wait_ms: 5,
            queue: 256,
            max_body_bytes: 8 << 20,
        }
    }
}

impl ServeConfig {
    /// Refuses settings the server cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), ServeError> {
        let bad =
            |setting: &str, reason: &str| Err(ServeError::Config(format!("{setting}: {reason}")));
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.queue == 0 {
            return bad("queue", "must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes", "must be at least 1");
        }
        if let Some(b) = self.budget
            && !(b > 0.0 && b.is_finite())
        {
            return bad("budget", "must be a positive fraction");
        }
        Ok(())
    }

    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}
