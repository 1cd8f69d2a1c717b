//! `privatize serve` as the real binary under reviews too large to hold at
//! once: the review memory budget answers 429 past it and is given back when
//! a review is answered, a review that alone would need more than the budget
//! once parsed gets 413 without serve growing, and bad bodies stay clear 4xx.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::serve::{fixture_bytes, read_until_closed, text, Serve, ServeOptions};
use futures_util::future::join_all;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const MIB: usize = 1024 * 1024;
/// The budget of these servers: five 3 MB request bodies fit, six do not.
const BUDGET: usize = 16 * MIB;
const LARGE: usize = 3_000_000;
const GAUGE: &str = "privatize_review_memory_bytes";

fn start() -> Serve {
    Serve::start_with(ServeOptions::default().args([
        "--review-memory-budget",
        "16MiB",
        // Held requests must not run into the body deadline.
        "--body-read-timeout",
        "300s",
    ]))
}

/// A pod review (skipped by annotation, so its decision does no I/O) padded
/// with an annotation to exactly `size` bytes.
fn pod_review(size: usize) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&fixture_bytes("http-review-pod-v1.json")).unwrap();
    review["request"]["object"]["metadata"]["annotations"]["bulk"] = json!("");
    let bare = serde_json::to_vec(&review).unwrap().len();
    assert!(size >= bare, "{size} < {bare}");
    review["request"]["object"]["metadata"]["annotations"]["bulk"] = json!("x".repeat(size - bare));
    let body = serde_json::to_vec(&review).unwrap();
    assert_eq!(body.len(), size);
    body
}

/// A pod review of about `size` bytes whose containers are all `{}`: each is
/// 3 bytes of JSON and a 2 KiB `Container` once parsed.
fn empty_containers_review(size: usize) -> Vec<u8> {
    let mut review: Value =
        serde_json::from_slice(&fixture_bytes("http-review-pod-v1.json")).unwrap();
    review["request"]["object"]["spec"] = json!({ "containers": vec![json!({}); size / 3] });
    serde_json::to_vec(&review).unwrap()
}

/// One sample of `/metrics` (0 when the series is not there yet).
fn metric(serve: &Serve, series: &str) -> f64 {
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Waits (bounded) until `series` reads `value`.
fn wait_metric(serve: &Serve, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = metric(serve, series);
        if now == value {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {now}, not {value}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused(reason: &str) -> String {
    format!(r#"privatize_reviews_refused_total{{path="/mutate/pods",reason="{reason}"}}"#)
}

/// An HTTP/1.1 review whose headers and first `sent` bytes are sent, the rest held back.
async fn hold(serve: &Serve, body: &[u8], sent: usize) -> TlsStream<TcpStream> {
    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /mutate/pods HTTP/1.1\r\nHost: privatize\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body[..sent]).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

/// Sends the rest of a held review and reads the whole answer.
async fn finish(mut tls: TlsStream<TcpStream>, body: &[u8], sent: usize) -> String {
    tls.write_all(&body[sent..]).await.unwrap();
    tls.flush().await.unwrap();
    text(
        &read_until_closed(&mut tls, Duration::from_secs(120))
            .await
            .expect("an answer, then close"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_reviews_get_429_at_once_and_the_budget_comes_back_when_answered() {
    let serve = start();
    let large = pod_review(LARGE);
    // Five reviews announce 3 MB each and send 1 KiB: serve reserves their
    // Content-Length up front, 15 MB of the 16 MiB.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(hold(&serve, &large, 1024).await);
    }
    wait_metric(&serve, GAUGE, (5 * LARGE) as f64);

    // Eight more, all at once over h2 (as the apiserver sends them): 429 each, at once.
    let answers = join_all((0..8).map(|_| serve.post("/mutate/pods", large.clone(), true))).await;
    for (status, body, _) in &answers {
        assert_eq!(*status, 429, "{}", text(body));
        assert!(
            text(body).starts_with("serve's review memory budget is in use (")
                && text(body)
                    .trim_end()
                    .ends_with("of 16.0 MiB held by reviews in flight); try again"),
            "{}",
            text(body)
        );
    }

    // A body with no Content-Length is charged as it streams in: refused
    // before it has all been sent.
    let tls = serve.connect_tls(&[b"h2"]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (chunks, receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    for _ in 0..4 {
        chunks.send(Bytes::from(vec![b' '; 512 * 1024])).unwrap();
    }
    // The stream stays open (no end of stream) until `chunks` is dropped.
    let stream = Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move {
            let chunk = receiver.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(Frame::data(chunk)),
                receiver,
            ))
        },
    ));
    let request = hyper::Request::post(format!(
        "https://127.0.0.1:{}/mutate/pods",
        serve.https.port()
    ))
    .body(StreamBody::new(stream))
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .expect("an answer while the body is still open")
        .unwrap();
    assert_eq!(response.status(), 429);
    drop(chunks);

    // A small review still fits in what is left.
    let (status, body, _) = serve
        .post(
            "/mutate/pods",
            fixture_bytes("http-review-pod-v1.json"),
            true,
        )
        .await;
    assert_eq!(status, 200, "{}", text(&body));
    assert_eq!(metric(&serve, &refused("budget")), 9.0);

    // Four held clients go away: their reservations are given back at once.
    let last = held.pop().unwrap();
    drop(held);
    wait_metric(&serve, GAUGE, LARGE as f64);
    // The last one is read, parsed (its parsed form is charged too) and answered.
    let answer = finish(last, &large, 1024).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.contains(r#""allowed":true"#),
        "{}",
        &answer[..answer.len().min(300)]
    );
    wait_metric(&serve, GAUGE, 0.0);

    // A burst of 3 MB reviews: some may be refused while the others are read...
    let burst = join_all((0..12).map(|_| serve.post("/mutate/pods", large.clone(), true))).await;
    for (status, body, _) in &burst {
        assert!(*status == 200 || *status == 429, "{status} {}", text(body));
    }
    wait_metric(&serve, GAUGE, 0.0);
    // ... and every review after it is answered.
    for _ in 0..6 {
        let (status, body, _) = serve.post("/mutate/pods", large.clone(), true).await;
        assert_eq!(status, 200, "{}", text(&body));
    }
    wait_metric(&serve, GAUGE, 0.0);
}

#[tokio::test]
async fn a_review_that_would_outgrow_the_whole_budget_once_parsed_gets_413_and_serve_stays_small() {
    let serve = start();
    // 1 MiB of `{}` containers is about 700 MiB of typed Containers.
    let (status, body, _) = serve
        .post("/mutate/pods", empty_containers_review(MIB), true)
        .await;
    assert_eq!(status, 413, "{}", text(&body));
    assert!(
        text(&body)
            .contains("would take more than the whole review memory budget of 16.0 MiB once read"),
        "{}",
        text(&body)
    );
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", serve.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    assert!(
        peak_kib < (BUDGET as u64 / 1024) + 100 * 1024,
        "serve peaked at {peak_kib} KiB"
    );
    assert_eq!(metric(&serve, &refused("over-budget")), 1.0);

    // Over 3 MiB is still 413 for its size, before the budget is asked.
    let (status, body, _) = serve
        .post("/mutate/pods", pod_review(3 * MIB + 1), true)
        .await;
    assert_eq!(status, 413, "{}", text(&body));
    assert!(
        text(&body)
            .contains("request body of 3145729 bytes is over the limit of 3145728 bytes (3 MiB)"),
        "{}",
        text(&body)
    );
    assert_eq!(metric(&serve, &refused("too-large")), 1.0);
    wait_metric(&serve, GAUGE, 0.0);

    // And a review of the same shape that fits is answered.
    let (status, body, _) = serve
        .post("/mutate/pods", empty_containers_review(3 * 1024), true)
        .await;
    assert_eq!(status, 200, "{}", text(&body));
}

#[tokio::test]
async fn a_truncated_review_gets_a_clear_400_and_gives_its_memory_back() {
    let serve = start();
    let large = pod_review(2 * MIB);
    // Cut in the middle, with a Content-Length that says so.
    let (status, body, _) = serve
        .post("/mutate/pods", large[..MIB].to_vec(), false)
        .await;
    assert_eq!(status, 400, "{}", text(&body));
    assert!(
        text(&body).starts_with(
            "invalid AdmissionReview JSON: EOF while parsing a string at line 1 column"
        ),
        "{}",
        text(&body)
    );
    // The connection ends before the body Content-Length announced.
    let mut tls = hold(&serve, &large, MIB).await;
    wait_metric(&serve, GAUGE, (2 * MIB) as f64);
    tls.shutdown().await.unwrap();
    let answer = read_until_closed(&mut tls, Duration::from_secs(60)).await;
    if let Some(answer) = answer.filter(|a| !a.is_empty()) {
        let answer = text(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("reading the request body: "), "{answer}");
    }
    wait_metric(&serve, GAUGE, 0.0);
    let (status, _, _) = serve.post("/mutate/pods", large, true).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&serve, &refused("budget")), 0.0);
}
