//! The HTTP API: routes, request checks, admission, and the JSON answers.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use burn::prelude::Backend;
use dmpo_infer::data::{DecodeError, DecodeLimits, MAX_IMAGE_PIXELS, decode_bytes};
use dmpo_infer::transform::eval_transform;
use dmpo_infer::{ModelInfo, MultiExit};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::batcher::{Job, Msg};
use crate::metrics::Metrics;
use crate::{Budgets, ServeConfig};

/// The web page: plain HTML and JS, no build step.
const PAGE: &str = include_str!("page.html");
/// Larger images are refused before they are decoded (a decompression bomb stays small).
const LIMITS: DecodeLimits = DecodeLimits {
    max_pixels: MAX_IMAGE_PIXELS,
    max_side: Some(8192),
    max_alloc: Some(256 << 20),
};

/// One image's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub class: String,
    pub class_index: usize,
    /// The exit criterion's value at the exit taken.
    pub confidence: f32,
    /// The exit it left at, 1-based, of `exits`.
    pub exit: usize,
    pub exits: usize,
    /// The budget it ran at, a fraction of the backbone's MACs; `null` for full depth.
    pub budget: Option<f64>,
    pub macs: u64,
    /// `macs` over the backbone's.
    pub cost_fraction: f64,
    /// From admission until its batch started.
    pub queue_ms: f64,
    /// From its batch's start until it left its exit.
    pub model_ms: f64,
    /// Images in the forward pass it ran in.
    pub batch: usize,
}

/// `POST /v1/classify`'s body: one answer per image, in the order they were sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyResponse {
    pub predictions: Vec<Answer>,
}

/// `GET /v1/model`: what is served and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub classes: Vec<String>,
    /// The block after which each exit sits.
    pub exit_blocks: Vec<usize>,
    pub input_size: usize,
    pub backbone_gmacs: f64,
    /// Budgets calibrated for this model, as fractions, that a request may name
    /// (`?budget=0.5`); `?budget=full` is always there too.
    pub budgets: Vec<f64>,
    /// The budget of a request that names none; `None`: full depth.
    pub default_budget: Option<f64>,
    pub max_batch: usize,
    pub max_wait_ms: u64,
    pub queue: usize,
    pub max_body_bytes: usize,
}

impl ModelCard {
    pub(crate) fn new<B: Backend, M: MultiExit<B>>(
        info: &ModelInfo,
        model: &M,
        budgets: &Budgets,
        config: &ServeConfig,
    ) -> Self {
        Self {
            classes: info.classes.clone(),
            exit_blocks: info.dmpo.exits.clone(),
            input_size: info.preprocess.input_size,
            backbone_gmacs: model.backbone_macs() as f64 / 1e9,
            budgets: budgets.fractions(),
            default_budget: budgets.fraction(budgets.default_index()),
            max_batch: config.max_batch,
            max_wait_ms: config.max_wait_ms,
            queue: config.queue,
            max_body_bytes: config.max_body_bytes,
        }
    }
}

/// What every request handler shares: one `Arc`, cloned per request.
#[derive(Clone)]
pub(crate) struct AppState(pub(crate) Arc<Shared>);

pub(crate) struct Shared {
    /// To the model thread.
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    /// One permit per admitted-and-unanswered image.
    pub(crate) admission: Arc<Semaphore>,
    pub(crate) budgets: Arc<Budgets>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) card: ModelCard,
    pub(crate) preprocess: dmpo_infer::Preprocess,
    pub(crate) config: ServeConfig,
}

pub(crate) fn router(state: AppState) -> Router {
    let limit = state.0.config.max_body_bytes;
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/model", get(model_card))
        .route("/v1/classify", post(classify))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let free = s.0.admission.available_permits();
    s.0.metrics
        .queue_depth
        .set(s.0.config.queue.saturating_sub(free) as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.0.metrics.encode(),
    )
        .into_response()
}

async fn model_card(State(s): State<AppState>) -> Response {
    axum::Json(s.0.card.clone()).into_response()
}

#[derive(Debug, Deserialize)]
struct ClassifyQuery {
    budget: Option<String>,
}

/// A refusal: its status and one line saying why.
struct Refusal {
    status: StatusCode,
    reason: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

async fn classify(
    State(s): State<AppState>,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    request: Request,
) -> Response {
    let response = match query {
        Ok(Query(q)) => match answer(&s, q, request).await {
            Ok(body) => axum::Json(body).into_response(),
            Err(refusal) => refusal.into_response(),
        },
        Err(rejection) => {
            Refusal::new(StatusCode::BAD_REQUEST, rejection.body_text()).into_response()
        }
    };
    s.0.metrics.count_request(response.status().as_u16());
    response
}

async fn answer(
    s: &AppState,
    q: ClassifyQuery,
    request: Request,
) -> Result<ClassifyResponse, Refusal> {
    let shared = &s.0;
    let budget = shared
        .budgets
        .resolve(q.budget.as_deref())
        .map_err(|reason| Refusal::new(StatusCode::BAD_REQUEST, reason))?;
    let bodies = read_images(s, request).await?;

    // Admission before decoding: a refused request costs no decoding.
    let n = bodies.len();
    if n > shared.config.queue {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{n} images in one request; this server admits at most {} at a time",
                shared.config.queue
            ),
        ));
    }
    let permits = Arc::clone(&shared.admission)
        .try_acquire_many_owned(n as u32)
        .map_err(|_| Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: format!(
                "server busy: {} images already waiting; retry shortly",
                shared.config.queue - shared.admission.available_permits()
            ),
            retry_after: Some(1),
        })?;
    let admitted = Instant::now();

    let preprocess = shared.preprocess.clone();
    let pixels = tokio::task::spawn_blocking(move || {
        bodies
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                decode(bytes)
                    .map(|img| eval_transform(&img, &preprocess))
                    .map_err(|e| {
                        if n == 1 {
                            e
                        } else {
                            format!("image {}: {e}", i + 1)
                        }
                    })
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .await
    .map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("decoding failed: {e}"),
        )
    })?
    .map_err(|reason| Refusal::new(StatusCode::BAD_REQUEST, reason))?;

    let mut permits = permits;
    let mut answers = Vec::with_capacity(n);
    for image in pixels {
        let (reply, answer) = oneshot::channel();
        let permit = permits.split(1).expect("one permit per image");
        shared
            .tx
            .send(Msg::Job(Job {
                pixels: image,
                budget,
                admitted,
                reply,
                _permit: permit,
            }))
            .map_err(|_| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down",
                )
            })?;
        answers.push(answer);
    }
    let mut predictions = Vec::with_capacity(n);
    for answer in answers {
        match answer.await {
            Ok(Ok(a)) => predictions.push(a),
            Ok(Err(reason)) => return Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, reason)),
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model thread dropped this image",
                ));
            }
        }
    }
    Ok(ClassifyResponse { predictions })
}

/// The request's images: its body (`image/*` or `application/octet-stream`), or each part of a
/// `multipart/form-data` body.
async fn read_images(s: &AppState, request: Request) -> Result<Vec<Bytes>, Refusal> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body over the server's limit of {} bytes",
                s.0.config.max_body_bytes
            ),
        )
    };
    let bodies = if mime == "multipart/form-data" {
        let mut form = Multipart::from_request(request, s)
            .await
            .map_err(|e| Refusal::new(e.status(), e.body_text()))?;
        let mut bodies = Vec::new();
        loop {
            match form.next_field().await {
                Ok(Some(field)) => bodies.push(field.bytes().await.map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        too_large()
                    } else {
                        Refusal::new(e.status(), e.body_text())
                    }
                })?),
                Ok(None) => break,
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large()),
                Err(e) => return Err(Refusal::new(e.status(), e.body_text())),
            }
        }
        bodies
    } else if mime.starts_with("image/") || mime == "application/octet-stream" {
        let body = axum::body::to_bytes(request.into_body(), s.0.config.max_body_bytes)
            .await
            .map_err(|_| too_large())?;
        vec![body]
    } else {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type '{content_type}': send one image as image/* or \
                 application/octet-stream, or several as multipart/form-data"
            ),
        ));
    };
    if bodies.is_empty() || bodies.iter().any(|b| b.is_empty()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "empty body: no image sent",
        ));
    }
    Ok(bodies)
}

/// Decodes one image (PNG, JPEG, BMP, GIF, TIFF, WebP), refusing oversized ones before
/// allocating them.
fn decode(bytes: &[u8]) -> Result<dmpo_infer::DynamicImage, String> {
    decode_bytes(bytes, &LIMITS).map_err(|e| match e {
        DecodeError::UnknownFormat => e.to_string(),
        DecodeError::Io(e) => format!("not a readable image: {e}"),
        other => format!("not a decodable image: {other}"),
    })
}
