//! The server shell of `privatize serve`, run as the real binary: TLS (h2 and
//! HTTP/1.1, hot reload, env PEM), AdmissionReview v1/v1beta1 in and out,
//! every kind of bad input, slow clients, probes, metrics and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::serve::{fixture_bytes, http_get, CertMode, Serve, ServeOptions, TestCert};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

const POD_V1: &str = "http-review-pod-v1.json";
const POD_V1BETA1: &str = "http-review-pod-v1beta1.json";
const SECRET_V1: &str = "http-review-secret-v1.json";
const NO_REQUEST: &str = "http-review-no-request.json";

/// Reads until the peer closes (or errors); `None` when it is still open at `timeout`.
async fn read_until_closed<R: AsyncRead + Unpin>(
    stream: &mut R,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.ok()?;
    Some(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn reviews_are_answered_in_the_version_asked_over_h2_and_http1() {
    let serve = Serve::start();
    for (path, fixture, h2, version, uid) in [
        (
            "/mutate/pods",
            POD_V1,
            true,
            "admission.k8s.io/v1",
            "7f3b2c1e-0d4a-4b8e-9c6f-http-pod-v1",
        ),
        (
            "/mutate/pods",
            POD_V1BETA1,
            false,
            "admission.k8s.io/v1beta1",
            "a41e9d20-55c7-4f1b-8e2a-http-pod-v1beta1",
        ),
        (
            "/api/v1/mutate",
            POD_V1BETA1,
            true,
            "admission.k8s.io/v1beta1",
            "a41e9d20-55c7-4f1b-8e2a-http-pod-v1beta1",
        ),
        (
            "/api/v1/mutate",
            POD_V1,
            false,
            "admission.k8s.io/v1",
            "7f3b2c1e-0d4a-4b8e-9c6f-http-pod-v1",
        ),
    ] {
        let (status, body, alpn) = serve.post(path, fixture_bytes(fixture), h2).await;
        let expected_alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        assert_eq!(alpn, expected_alpn, "{path} {fixture}");
        assert_eq!(status, 200, "{path} {fixture}: {}", text(&body));
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["apiVersion"], version, "{review}");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], uid);
        assert_eq!(review["response"]["allowed"], true, "{review}");
        assert!(review.get("request").is_none(), "{review}");
    }
    // One log line per admission, with the fields an operator searches by.
    let line = serve
        .wait_for_log(Duration::from_secs(5), |l| {
            l["message"] == "admission" && l["uid"] == "7f3b2c1e-0d4a-4b8e-9c6f-http-pod-v1"
        })
        .expect("an admission log line");
    assert_eq!(line["namespace"], "http-shell");
    assert_eq!(
        line["name"], "web-5d9c7b-*",
        "a generateName pod is named by its prefix"
    );
    assert_eq!(line["kind"], "Pod");
    assert_eq!(line["operation"], "CREATE");
    assert_eq!(line["path"], "/mutate/pods");
    assert_eq!(line["decision"], "allowed");
    assert!(line["latency_ms"].is_u64(), "{line}");
}

#[tokio::test]
async fn a_secret_review_is_answered_and_its_data_never_logged() {
    let serve = Serve::start();
    let (status, review) = serve.review("/mutate/secrets", SECRET_V1, true).await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(
        review["response"]["uid"],
        "c0ffee00-1234-4abc-9def-http-secret-v1"
    );
    serve
        .wait_for_log(Duration::from_secs(5), |l| {
            l["message"] == "admission" && l["kind"] == "Secret"
        })
        .expect("an admission log line for the Secret");
    let logs = serve.log_text();
    for secret in [
        "top-secret-token-do-not-log",
        "dG9wLXNlY3JldC10b2tlbg",
        "eyJhdXRocyI6eyJxdWF5LmlvIjp7",
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret} in the logs:\n{logs}"
        );
    }
}

#[tokio::test]
async fn bad_reviews_get_a_400_naming_what_is_wrong() {
    let serve = Serve::start();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("/mutate/pods", b"{not json".to_vec(), "invalid AdmissionReview JSON: key must be a string at line 1 column 2"),
        ("/mutate/pods", b"".to_vec(), "invalid AdmissionReview JSON: EOF while parsing a value at line 1 column 0"),
        ("/mutate/pods", fixture_bytes(NO_REQUEST), "the AdmissionReview has no request"),
        ("/mutate/pods", fixture_bytes(SECRET_V1), "/mutate/pods serves Pods, not v1/Secret"),
        ("/mutate/secrets", fixture_bytes(POD_V1), "/mutate/secrets serves Secrets, not v1/Pod"),
        (
            "/mutate/pods",
            text(&fixture_bytes(POD_V1)).replace("admission.k8s.io/v1", "admission.k8s.io/v2").into_bytes(),
            "unsupported AdmissionReview apiVersion \"admission.k8s.io/v2\": expected admission.k8s.io/v1 or admission.k8s.io/v1beta1",
        ),
    ];
    for (path, body, message) in cases {
        let (status, answer, _) = serve.post(path, body, false).await;
        assert_eq!(status, 400, "{path}: {}", text(&answer));
        assert_eq!(text(&answer).trim_end(), message);
    }
    let (status, answer, _) = serve
        .post("/mutate/deployments", b"{}".to_vec(), true)
        .await;
    assert_eq!(status, 404, "{}", text(&answer));
    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    tls.write_all(b"GET /mutate/pods HTTP/1.1\r\nHost: privatize\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = text(
        &read_until_closed(&mut tls, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains(r#"privatize_admissions_total{path="/mutate/pods",outcome="invalid"} 5"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_over_3_mib_is_refused_with_413_without_reading_it() {
    let serve = Serve::start();
    // Content-Length says too much: the answer comes before any body byte is sent.
    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    tls.write_all(b"POST /mutate/pods HTTP/1.1\r\nHost: privatize\r\nContent-Type: application/json\r\nContent-Length: 4194304\r\n\r\n")
        .await
        .unwrap();
    let answer = text(
        &read_until_closed(&mut tls, Duration::from_secs(10))
            .await
            .expect("answer, then close"),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("request body of 4194304 bytes is over the limit of 3145728 bytes (3 MiB)"),
        "{answer}"
    );

    // No length announced (h2 stream): cut off once 3 MiB have arrived.
    let tls = serve.connect_tls(&[b"h2"]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let chunks = (0..8).map(|_| {
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b' '; 512 * 1024])))
    });
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let request = hyper::Request::post(format!(
        "https://127.0.0.1:{}/mutate/pods",
        serve.https.port()
    ))
    .body(body)
    .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 413);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        text(&body).contains("over the limit of 3145728 bytes"),
        "{}",
        text(&body)
    );
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_refused() {
    let serve = Serve::start();
    let mut tcp = tokio::net::TcpStream::connect(serve.https).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: privatize\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut tcp, Duration::from_secs(5))
        .await
        .expect("the connection is closed, not left hanging");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {}",
        text(&answer)
    );
    // Whatever came back is a TLS alert record (content type 21), never a page.
    if let Some(first) = answer.first() {
        assert_eq!(*first, 0x15, "{answer:?}");
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let serve = Serve::start_with(ServeOptions::default().args([
        "--header-read-timeout",
        "1s",
        "--body-read-timeout",
        "1s",
        "--idle-timeout",
        "1s",
    ]));
    let deadline = Duration::from_secs(6);

    // A TCP connection that never starts its handshake.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(serve.https).await.unwrap();
    read_until_closed(&mut silent, deadline)
        .await
        .expect("silent TLS client cut off");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // Headers that never end.
    let started = Instant::now();
    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    tls.write_all(b"POST /mutate/pods HTTP/1.1\r\nHost: privatize\r\n")
        .await
        .unwrap();
    read_until_closed(&mut tls, deadline)
        .await
        .expect("slow headers cut off");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );

    // A body that never ends: 408 with the reason.
    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    tls.write_all(
        b"POST /mutate/pods HTTP/1.1\r\nHost: privatize\r\nContent-Length: 100\r\n\r\n{\"apiVersi",
    )
    .await
    .unwrap();
    let answer = text(
        &read_until_closed(&mut tls, deadline)
            .await
            .expect("slow body answered"),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the request body did not arrive within 1s"),
        "{answer}"
    );

    // Idle keep-alive connections, HTTP/1.1 and h2, are closed.
    for h2 in [false, true] {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let tls = serve.connect_tls(alpn).await.unwrap();
        let request = || {
            hyper::Request::get(format!("https://127.0.0.1:{}/healthz", serve.https.port()))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        let started = Instant::now();
        let closed = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            let conn = tokio::spawn(conn);
            assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
            tokio::time::timeout(deadline, conn).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            assert_eq!(sender.send_request(request()).await.unwrap().status(), 200);
            tokio::time::timeout(deadline, conn).await
        };
        assert!(
            closed.is_ok(),
            "idle connection (h2: {h2}) still open after {deadline:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{:?}",
            started.elapsed()
        );
    }
}

/// The certificate the server presents to a new handshake.
async fn presented(serve: &Serve) -> Vec<u8> {
    let tls = serve.connect_tls(&[b"h2"]).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn rotated_certificate_files_are_served_to_new_handshakes() {
    let mut serve = Serve::start();
    assert_eq!(presented(&serve).await, serve.cert.der());
    let (_, metrics) = serve.get("/metrics");
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("privatize_tls_certificate_expiry_seconds "))
        .expect("expiry gauge")
        .parse()
        .unwrap();
    assert!(
        expiry > 364.0 * 86400.0 && expiry <= 365.0 * 86400.0,
        "{expiry}"
    );

    // A rotated Secret: new files; new handshakes get the new certificate.
    let rotated = TestCert::issue();
    serve.cas.push(rotated.ca_pem.clone());
    serve.write_certificate(&rotated);
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(&serve).await != rotated.der() {
        assert!(
            Instant::now() < deadline,
            "still the old certificate:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A bad pair (the key of another certificate) is refused; the last good one stays.
    let other = TestCert::issue();
    let bad = TestCert {
        ca_pem: other.ca_pem.clone(),
        cert_pem: other.cert_pem.clone(),
        key_pem: rotated.key_pem.clone(),
    };
    serve.cas.push(other.ca_pem.clone());
    serve.write_certificate(&bad);
    serve
        .wait_for_log(Duration::from_secs(10), |l| {
            l["message"] == "refusing the new certificate files; keeping what is loaded"
        })
        .unwrap_or_else(|| panic!("no warning for a bad pair:\n{}", serve.log_text()));
    assert_eq!(presented(&serve).await, rotated.der());
    let (_, metrics) = serve.get("/metrics");
    assert!(
        metrics.contains(r#"privatize_tls_certificate_reloads_total{result="rejected"} 1"#),
        "{metrics}"
    );
    assert_eq!(serve.get("/readyz").0, 200);
}

#[tokio::test]
async fn pem_text_in_the_environment_wins_over_the_files() {
    let serve = Serve::start_with(ServeOptions {
        cert: CertMode::Env,
        ..ServeOptions::default()
    });
    assert_eq!(presented(&serve).await, serve.cert.der());
}

#[tokio::test]
async fn readyz_waits_for_a_certificate_and_for_kubernetes() {
    // No certificate files yet: alive, not ready; ready once they appear.
    let serve = Serve::start_with(ServeOptions {
        cert: CertMode::MissingFiles,
        wait_ready: false,
        ..ServeOptions::default()
    });
    let (status, body) = serve.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("no serving certificate loaded"), "{body}");
    assert_eq!(serve.get("/healthz"), (200, "ok\n".to_string()));
    serve.write_certificate(&serve.cert);
    serve.wait_ready(Duration::from_secs(10));
    assert_eq!(presented(&serve).await, serve.cert.der());

    // A Kubernetes API that never answers: never ready, and it says why.
    let kubeconfig = std::fs::read_to_string(common::kube::kubeconfig_path()).unwrap();
    let unreachable: String = kubeconfig
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                "    server: https://127.0.0.1:1".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = std::env::temp_dir().join(format!("privatize-kubeconfig-{}", common::unique()));
    std::fs::write(&path, unreachable).unwrap();
    let serve = Serve::start_with(ServeOptions {
        kubeconfig: Some(path.clone()),
        wait_ready: false,
        ..ServeOptions::default()
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = serve.get("/readyz");
    assert_eq!(status, 503);
    assert_eq!(body.trim_end(), "not ready: Kubernetes API not reached yet");
    assert_eq!(serve.get("/healthz").0, 200);
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn metrics_describe_every_family_and_healthz_answers_on_both_ports() {
    let serve = Serve::start();
    let (status, _) = serve.review("/mutate/pods", POD_V1, true).await;
    assert_eq!(status, 200);
    assert_eq!(serve.get("/healthz"), (200, "ok\n".to_string()));
    let (status, body, _) = {
        let tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get("/healthz")
            .header("host", "privatize")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
            (),
        )
    };
    assert_eq!(
        (status, text(&body)),
        (200, "ok\n".to_string()),
        "/healthz on the HTTPS port"
    );
    assert_eq!(
        http_get(serve.http, "/mutate/pods").0,
        404,
        "no admissions on the plain port"
    );

    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    for (family, kind) in [
        ("privatize_admissions", "counter"),
        ("privatize_admission_duration_seconds", "histogram"),
        ("privatize_images_rewritten", "counter"),
        ("privatize_images_skipped", "counter"),
        ("privatize_images_allowed_unchanged", "counter"),
        ("privatize_pods_gated", "counter"),
        ("privatize_pods_released", "counter"),
        ("privatize_pods_reverted", "counter"),
        ("privatize_gate_wait_seconds", "histogram"),
        ("privatize_copy_jobs_created", "counter"),
        ("privatize_copy_jobs_succeeded", "counter"),
        ("privatize_copy_jobs_failed", "counter"),
        ("privatize_presence_checks", "counter"),
        ("privatize_ecr_tokens_fetched", "counter"),
        ("privatize_secrets_injected", "counter"),
        ("privatize_tls_certificate_expiry_seconds", "gauge"),
        ("privatize_tls_certificate_reloads", "counter"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"privatize_admissions_total{path="/mutate/pods",outcome="allowed"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"privatize_admission_duration_seconds_count{path="/mutate/pods"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_fails_readyz_first_then_finishes_the_admission_in_flight_and_exits_0() {
    let mut serve = Serve::start_with(ServeOptions::default().args(["--shutdown-delay", "1s"]));
    let body = fixture_bytes(POD_V1);
    let (first, rest) = body.split_at(body.len() / 2);

    let mut tls = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    let head = format!(
        "POST /mutate/pods HTTP/1.1\r\nHost: privatize\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    serve.signal(libc::SIGTERM);
    // During the delay: not ready, still alive, still accepting.
    let deadline = Instant::now() + Duration::from_millis(800);
    loop {
        let (status, text) = serve.get("/readyz");
        if status == 503 {
            assert_eq!(text.trim_end(), "not ready: shutting down");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(serve.get("/healthz").0, 200);

    // After the delay: new connections are refused, the one in flight goes on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        std::net::TcpStream::connect(serve.https).is_err(),
        "HTTPS still accepting"
    );
    assert_eq!(serve.get("/healthz").0, 0, "HTTP still accepting");
    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let answer = text(
        &read_until_closed(&mut tls, Duration::from_secs(10))
            .await
            .expect("an answer"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("7f3b2c1e-0d4a-4b8e-9c6f-http-pod-v1"),
        "{answer}"
    );

    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("serve exits");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        serve.log_text()
    );
}

#[tokio::test]
async fn sigint_exits_0_too() {
    let mut serve = Serve::start();
    serve.signal(libc::SIGINT);
    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("serve exits");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        serve.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_calls_serve_over_h2_with_v1_and_v1beta1_reviews() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, DeleteParams, PostParams};

    let ns = common::kube::TestNamespace::new("serve-http").await;
    let serve = Serve::start();
    let ca_bundle = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &serve.cert.ca_pem,
    );
    // Scoped to this test's namespace, failing closed: a bad answer fails the create.
    let hook = |name: &str, path: &str, version: &str| {
        serde_json::json!({
            "name": name,
            "clientConfig": {"url": format!("https://127.0.0.1:{}{path}", serve.https.port()), "caBundle": ca_bundle},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
            "admissionReviewVersions": [version],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10
        })
    };
    let name = format!("{}-serve-http", ns.name);
    let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "webhooks": [
            hook("pods.serve-http.privatize.io", "/mutate/pods", "v1beta1"),
            hook("seed.serve-http.privatize.io", "/api/v1/mutate", "v1"),
        ]
    }))
    .unwrap();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shell", "annotations": {"privatize.io/skip": "true"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap();
    let created = Api::<Pod>::namespaced(ns.client.clone(), &ns.name)
        .create(&PostParams::default(), &pod)
        .await;
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    created.unwrap_or_else(|e| panic!("pod refused: {e}\n{}", serve.log_text()));

    for path in ["/mutate/pods", "/api/v1/mutate"] {
        serve
            .wait_for_log(Duration::from_secs(5), |l| {
                l["message"] == "admission"
                    && l["path"] == path
                    && l["namespace"] == ns.name.as_str()
            })
            .unwrap_or_else(|| panic!("no admission on {path}:\n{}", serve.log_text()));
    }
    assert!(
        serve
            .wait_for_log(Duration::from_secs(1), |l| l["message"] == "TLS connection"
                && l["protocol"] == "h2")
            .is_some(),
        "the apiserver did not speak h2:\n{}",
        serve.log_text()
    );
}
