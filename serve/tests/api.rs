//! The server as a client sees it: good and bad requests (each bad one a 4xx with a reason, the
//! next good one still answered), overload refused with 503, a failing batch answered with 500
//! while the server goes on, and shutdown answering the requests in flight.

use std::io::Cursor;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::backend::NdArray;
use burn::prelude::*;
use dmpo_infer::image::{DynamicImage, GrayImage, ImageFormat, Luma};
use dmpo_infer::{Criterion, ExitPolicy, ModelInfo, MultiExit};
use dmpo_model::Preprocess;
use dmpo_model::dmpo::{DmpoConfig, DmpoModel, StageCost};
use dmpo_model::vit::VitConfig;
use dmpo_serve::{ClassifyResponse, ModelCard, ServeConfig, ServeError, Served, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type B = NdArray;

/// A tiny DMPO model (exits after blocks 2 and 4) calibrated for a 50 % budget, wrapped so a
/// test can make its trunk panic.
#[derive(Clone)]
struct Faulty {
    model: DmpoModel<B>,
    fail: Arc<AtomicBool>,
}

impl MultiExit<B> for Faulty {
    fn num_exits(&self) -> usize {
        self.model.num_exits()
    }
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 3> {
        self.model.embed(images)
    }
    fn forward_trunk(&self, k: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        assert!(!self.fail.load(Ordering::SeqCst), "injected fault");
        self.model.forward_trunk(k, x)
    }
    fn forward_exit(&self, k: usize, h: Tensor<B, 3>) -> Tensor<B, 2> {
        self.model.forward_exit(k, h)
    }
    fn stage_costs(&self) -> Vec<StageCost> {
        self.model.stage_costs()
    }
}

fn served() -> (Served<B, Faulty>, Arc<AtomicBool>) {
    let device = Default::default();
    let vit = VitConfig::tiny();
    let preprocess = Preprocess::new(vit.img_size).with_crop_pct(1.0);
    let dmpo = DmpoConfig::new(5).with_exits(vec![2, 4]);
    let model = dmpo.init(vit.init::<B>(&device), &device).unwrap();
    let mut info = ModelInfo::new(dmpo, preprocess, (0..5).map(|c| format!("c{c}")).collect());
    let policy = ExitPolicy {
        criterion: Criterion::MaxProb,
        thresholds: vec![0.0],
    };
    info.set_default_budget(0.5, policy);
    let fail = Arc::new(AtomicBool::new(false));
    let served = Served {
        info,
        model: Faulty {
            model,
            fail: Arc::clone(&fail),
        },
        device,
        backend: PhantomData,
    };
    (served, fail)
}

struct Running {
    base: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    fail: Arc<AtomicBool>,
    client: reqwest::Client,
}

async fn start(config: ServeConfig) -> Running {
    let (served, fail) = served();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, served, config, async {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        addr,
        stop: Some(stop),
        task,
        fail,
        client: reqwest::Client::new(),
    }
}

impl Running {
    async fn post(
        &self,
        query: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(format!("{}/v1/classify{query}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }

    async fn get(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until `n` images are admitted and unanswered.
    async fn wait_for_queue(&self, n: usize) {
        let want = format!("dmpo_queue_depth {n}");
        let start = Instant::now();
        while !self.get("/metrics").await.lines().any(|l| l == want) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "queue never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn png(seed: u8) -> Vec<u8> {
    let img = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| {
        Luma([(x as u8)
            .wrapping_mul(9)
            .wrapping_add(y as u8)
            .wrapping_add(seed)])
    }));
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn multipart(parts: &[Vec<u8>]) -> (String, Vec<u8>) {
    let boundary = "dmpo-test-boundary";
    let mut body = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; \
                 filename=\"{i}.png\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn error(v: &serde_json::Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_and_bad_requests_each_get_their_answer() {
    let config = ServeConfig {
        max_body_bytes: 64 << 10,
        max_wait_ms: 1,
        ..ServeConfig::default()
    };
    let s = start(config).await;
    assert_eq!(s.get("/healthz").await, "ok\n");
    assert!(s.get("/").await.contains("<input type=\"file\""));
    let card: ModelCard = serde_json::from_str(&s.get("/v1/model").await).unwrap();
    assert_eq!(card.budgets, vec![0.5]);
    assert_eq!(card.default_budget, Some(0.5));

    // One image at the default budget: threshold 0 lets it leave at the first exit.
    let (status, body) = s.post("", "image/png", png(0)).await;
    assert_eq!(status, 200, "{body}");
    let r: ClassifyResponse = serde_json::from_value(body).unwrap();
    assert_eq!(r.predictions.len(), 1);
    let p = &r.predictions[0];
    assert_eq!((p.exit, p.exits, p.budget), (1, 2, Some(0.5)));
    assert!(p.class.starts_with('c') && p.class_index < 5);
    assert!(p.cost_fraction > 0.0 && p.cost_fraction < 1.0);

    // Full depth: the last exit answers, at more than the backbone's MACs (heads included).
    let (status, body) = s
        .post("?budget=full", "application/octet-stream", png(1))
        .await;
    assert_eq!(status, 200, "{body}");
    let r: ClassifyResponse = serde_json::from_value(body).unwrap();
    assert_eq!((r.predictions[0].exit, r.predictions[0].budget), (2, None));
    assert!(r.predictions[0].cost_fraction > p.cost_fraction);

    // Several images as multipart: one answer each, in order.
    let (ct, body) = multipart(&[png(2), png(3), png(4)]);
    let (status, body) = s.post("?budget=50%25", &ct, body).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"].as_array().unwrap().len(), 3);

    // Bad requests: a 4xx with a one-line reason each.
    let (status, body) = s.post("", "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, 415);
    assert!(error(&body).contains("Content-Type 'text/plain'"), "{body}");
    let (status, body) = s.post("", "image/png", b"not a png at all".to_vec()).await;
    assert_eq!(status, 400);
    assert!(error(&body).starts_with("not a"), "{body}");
    let mut truncated = png(5);
    truncated.truncate(60);
    let (status, body) = s.post("", "image/png", truncated).await;
    assert_eq!(status, 400, "{body}");
    // The fuzzer's 12031 x 0 GIF (tests/fixtures/hostile): refused before the resize divides
    // by its zero side.
    let gif = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/hostile/fuzz_gif_zero_height.gif"),
    )
    .unwrap();
    let (status, body) = s.post("", "image/gif", gif).await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("has no pixels"), "{body}");
    let (status, body) = s.post("?budget=0.4", "image/png", png(6)).await;
    assert_eq!(status, 400);
    assert!(
        error(&body).contains("unknown budget '0.4'") && error(&body).contains("0.5, full"),
        "{body}"
    );
    let (status, body) = s.post("", "image/png", vec![7; 100 << 10]).await;
    assert_eq!(status, 413);
    assert!(error(&body).contains("limit of 65536 bytes"), "{body}");
    let (status, body) = s.post("", "image/png", Vec::new()).await;
    assert_eq!(status, 400);
    assert!(error(&body).contains("empty body"), "{body}");
    let (ct, body) = multipart(&[png(8), b"garbage".to_vec()]);
    let (status, body) = s.post("", &ct, body).await;
    assert_eq!(status, 400);
    assert!(error(&body).starts_with("image 2: "), "{body}");

    // The server goes on.
    let (status, body) = s.post("", "image/png", png(9)).await;
    assert_eq!(status, 200, "{body}");

    let metrics = s.get("/metrics").await;
    for line in [
        "dmpo_requests_total{status=\"200\"} 4",
        "dmpo_requests_total{status=\"400\"} 6",
        "dmpo_requests_total{status=\"413\"} 1",
        "dmpo_requests_total{status=\"415\"} 1",
        "dmpo_queue_depth 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("dmpo_images_total{exit=\"1\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dmpo_images_total{exit=\"2\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("dmpo_batch_size_count"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_503_and_retry_after() {
    // Two images admitted at most; the first waits up to 1.5 s for a batch to fill.
    let config = ServeConfig {
        queue: 2,
        max_batch: 8,
        max_wait_ms: 1500,
        ..ServeConfig::default()
    };
    let s = Arc::new(start(config).await);
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.post("", "image/png", png(i)).await })
        })
        .collect();
    s.wait_for_queue(2).await;
    let r = s
        .client
        .post(format!("{}/v1/classify", s.base))
        .header("content-type", "image/png")
        .body(png(3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert!(error(&body).contains("server busy"), "{body}");
    // Three images in one request can never fit a queue of two.
    let (ct, body) = multipart(&[png(4), png(5), png(6)]);
    let (status, _) = s.post("", &ct, body).await;
    assert_eq!(status, 413);
    for w in waiting {
        let (status, body) = w.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // Both ran in one forward pass.
        assert_eq!(body["predictions"][0]["batch"], 2);
    }
    let (status, _) = s.post("", "image/png", png(7)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_answered_with_500_and_the_server_goes_on() {
    let s = start(ServeConfig {
        max_wait_ms: 0,
        ..ServeConfig::default()
    })
    .await;
    s.fail.store(true, Ordering::SeqCst);
    let (status, body) = s.post("", "image/png", png(0)).await;
    assert_eq!(status, 500);
    assert!(error(&body).contains("injected fault"), "{body}");
    s.fail.store(false, Ordering::SeqCst);
    let (status, body) = s.post("", "image/png", png(1)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_requests_in_flight_then_returns() {
    let config = ServeConfig {
        max_batch: 8,
        max_wait_ms: 1000,
        ..ServeConfig::default()
    };
    let mut s = start(config).await;
    let client = s.client.clone();
    let url = format!("{}/v1/classify", s.base);
    let in_flight = tokio::spawn(async move {
        let r = client
            .post(url)
            .header("content-type", "image/png")
            .body(png(0))
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    s.wait_for_queue(1).await;
    s.stop.take().unwrap().send(()).unwrap();
    // The request admitted before the shutdown is answered...
    assert_eq!(in_flight.await.unwrap(), 200);
    // ...and the server returns, without error, and listens no more.
    tokio::time::timeout(Duration::from_secs(10), &mut s.task)
        .await
        .expect("the server returned")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}
