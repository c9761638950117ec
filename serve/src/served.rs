use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use burn::prelude::*;
use dmpo_infer::{ModelInfo, MultiExit, TunedModel};
use dmpo_model::dmpo::DmpoModel;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::api::{self, AppState, ModelCard, Shared};
use crate::batcher::{self, Msg};
use crate::metrics::Metrics;
use crate::{Budgets, ServeConfig, ServeError};

/// What the server runs: a model's description (classes, preprocessing, calibrated budgets) and
/// its multi-exit network on a device. [`TunedModel`] converts into it; tests and apps may serve
/// any [`MultiExit`].
pub struct Served<B: Backend, M> {
    pub info: ModelInfo,
    pub model: M,
    pub device: B::Device,
    pub backend: PhantomData<B>,
}

impl<B: Backend> From<TunedModel<B>> for Served<B, DmpoModel<B>> {
    fn from(tuned: TunedModel<B>) -> Self {
        let device = tuned.device().clone();
        Self {
            info: tuned.info,
            model: tuned.model,
            device,
            backend: PhantomData,
        }
    }
}

impl<B: Backend, M: Clone> Clone for Served<B, M> {
    fn clone(&self) -> Self {
        Self {
            info: self.info.clone(),
            model: self.model.clone(),
            device: self.device.clone(),
            backend: PhantomData,
        }
    }
}

/// Serves `served` on `listener` until `shutdown` completes; then stops accepting connections,
/// answers every request already admitted, stops the model thread and returns.
pub async fn serve<B, M>(
    listener: TcpListener,
    served: Served<B, M>,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError>
where
    B: Backend,
    M: MultiExit<B> + Send + 'static,
{
    config.validate()?;
    let budgets = Arc::new(Budgets::new(&served.info, config.budget)?);
    let card = ModelCard::new(&served.info, &served.model, &budgets, &config);
    let metrics = Arc::new(Metrics::new());
    let preprocess = served.info.preprocess.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = batcher::spawn::<B, M>(
        served,
        Arc::clone(&budgets),
        Arc::clone(&metrics),
        &config,
        rx,
        tokio::runtime::Handle::current(),
    )?;
    let state = AppState(Arc::new(Shared {
        tx: tx.clone(),
        admission: Arc::new(Semaphore::new(config.queue)),
        budgets,
        metrics,
        card,
        preprocess,
        config: config.clone(),
    }));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("serving on http://{addr}/ (API: POST /v1/classify)");
    }
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    // Every connection has closed, so every admitted image has been answered: stop the thread.
    let _ = tx.send(Msg::Stop);
    let joined = tokio::task::spawn_blocking(move || worker.join()).await;
    served?;
    match joined {
        Ok(Ok(())) => Ok(()),
        _ => Err(ServeError::Model("the model thread panicked".into())),
    }
}

/// Binds `config.addr` and serves until Ctrl-C or SIGTERM, on a runtime of its own: what a
/// command line or a plain `main` calls.
pub fn serve_until_signal<B: Backend>(
    model: TunedModel<B>,
    config: ServeConfig,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.addr,
                source,
            })?;
        serve(listener, Served::from(model), config, signal()).await
    })
}

/// Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send).
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: answering the requests in flight");
}
