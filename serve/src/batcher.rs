//! The model thread: gathers admitted images into batches and answers each image the moment
//! it leaves its exit.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use burn::prelude::*;
use dmpo_infer::{MultiExit, Prediction, run_early_exit_each};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use crate::api::Answer;
use crate::metrics::{ExitLabel, Metrics};
use crate::{Budgets, ServeConfig, ServeError, Served};

/// One admitted image, preprocessed, waiting for the model.
pub(crate) struct Job {
    /// The model's input for it, `[3, S, S]` flattened.
    pub pixels: Vec<f32>,
    /// Index into [`Budgets`].
    pub budget: usize,
    pub admitted: Instant,
    pub reply: oneshot::Sender<Result<Answer, String>>,
    /// Its place in the bounded admission: freed when the job is answered (dropped).
    pub _permit: OwnedSemaphorePermit,
}

pub(crate) enum Msg {
    Job(Job),
    /// Every request is answered and no more can come: end the thread.
    Stop,
}

struct Thread<B: Backend, M> {
    served: Served<B, M>,
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    max_wait: Duration,
    full_macs: u64,
    input_size: usize,
}

pub(crate) fn spawn<B, M>(
    served: Served<B, M>,
    budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
    config: &ServeConfig,
    rx: mpsc::UnboundedReceiver<Msg>,
    runtime: tokio::runtime::Handle,
) -> Result<JoinHandle<()>, ServeError>
where
    B: Backend,
    M: MultiExit<B> + Send + 'static,
{
    let full_macs = served.model.backbone_macs();
    let thread = Thread {
        input_size: served.info.preprocess.input_size,
        served,
        budgets,
        metrics,
        max_batch: config.max_batch,
        max_wait: config.max_wait(),
        full_macs,
    };
    Ok(std::thread::Builder::new()
        .name("dmpo-model".into())
        .spawn(move || thread.run(rx, runtime))?)
}

impl<B: Backend, M: MultiExit<B>> Thread<B, M> {
    fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>, runtime: tokio::runtime::Handle) {
        loop {
            let first = match rx.blocking_recv() {
                Some(Msg::Job(job)) => job,
                Some(Msg::Stop) | None => return,
            };
            // The first image waits at most `max_wait` since it was admitted (time spent queued
            // behind a busy model counts) for others to join it.
            let deadline = first.admitted + self.max_wait;
            let mut jobs = vec![first];
            let mut stop = false;
            while jobs.len() < self.max_batch {
                let next = match rx.try_recv() {
                    Ok(msg) => Some(msg),
                    Err(TryRecvError::Disconnected) => None,
                    Err(TryRecvError::Empty) => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        // The timer is made inside the runtime (it needs its clock).
                        let wait = deadline - now;
                        match runtime
                            .block_on(async { tokio::time::timeout(wait, rx.recv()).await })
                        {
                            Ok(msg) => msg,
                            Err(_waited_long_enough) => break,
                        }
                    }
                };
                match next {
                    Some(Msg::Job(job)) => jobs.push(job),
                    Some(Msg::Stop) | None => {
                        stop = true;
                        break;
                    }
                }
            }
            self.run_batch(jobs);
            if stop {
                return;
            }
        }
    }

    /// Runs one batch, one compacting early-exit pass per budget asked for in it.
    fn run_batch(&self, jobs: Vec<Job>) {
        self.metrics.batch_size.observe(jobs.len() as f64);
        let mut by_budget: BTreeMap<usize, Vec<Job>> = BTreeMap::new();
        for job in jobs {
            by_budget.entry(job.budget).or_default().push(job);
        }
        for (budget, group) in by_budget {
            self.run_group(budget, group);
        }
    }

    fn run_group(&self, budget: usize, group: Vec<Job>) {
        let n = group.len();
        let s = self.input_size;
        let mut pixels = Vec::with_capacity(n * 3 * s * s);
        let mut waiting = Vec::with_capacity(n);
        for job in group {
            pixels.extend_from_slice(&job.pixels);
            waiting.push(Some(job));
        }
        let started = Instant::now();
        let policy = self.budgets.policy(budget);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let images = Tensor::<B, 4>::from_data(
                TensorData::new(pixels, [n, 3, s, s]),
                &self.served.device,
            );
            run_early_exit_each(&self.served.model, images, policy, |i, p| {
                if let Some(job) = waiting[i].take() {
                    self.answer(job, p, budget, started, n);
                }
            })
        }));
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!(
                "the model failed on this batch: {}",
                dmpo_infer::panics::message(panic.as_ref())
            ),
        };
        tracing::error!("batch of {n} images: {failure}");
        for Job { reply, _permit, .. } in waiting.into_iter().flatten() {
            drop(_permit);
            let _ = reply.send(Err(failure.clone()));
        }
    }

    fn answer(&self, job: Job, p: Prediction, budget: usize, started: Instant, batch: usize) {
        let latency = job.admitted.elapsed();
        let exits = self.served.model.num_exits();
        self.metrics
            .exits
            .get_or_create(&ExitLabel {
                exit: p.exit as u32 + 1,
            })
            .inc();
        self.metrics.macs.inc_by(p.macs);
        self.metrics.latency.observe(latency.as_secs_f64());
        let answer = Answer {
            class: self
                .served
                .info
                .classes
                .get(p.class)
                .cloned()
                .unwrap_or_else(|| p.class.to_string()),
            class_index: p.class,
            confidence: p.confidence,
            exit: p.exit + 1,
            exits,
            budget: self.budgets.fraction(budget),
            macs: p.macs,
            cost_fraction: p.macs as f64 / self.full_macs.max(1) as f64,
            queue_ms: 1e3 * started.duration_since(job.admitted).as_secs_f64(),
            model_ms: 1e3 * started.elapsed().as_secs_f64(),
            batch,
        };
        // Its place in the queue is free before the client hears back (a client that reads
        // the metrics next sees it free). A client that went away waits for nothing.
        let Job { reply, _permit, .. } = job;
        drop(_permit);
        let _ = reply.send(Ok(answer));
    }
}
