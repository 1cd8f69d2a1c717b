//! `privatize serve` as the real binary, the HTTP side: AdmissionReview v1 and
//! v1beta1 over h2 and HTTP/1.1 (and from the real apiserver), every kind of
//! bad input, probes and metrics. TLS and lifecycle: serve_lifecycle.rs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::serve::{fixture_bytes, http_get, read_until_closed, text, Serve};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

const POD_V1: &str = "http-review-pod-v1.json";
const POD_V1BETA1: &str = "http-review-pod-v1beta1.json";
const SECRET_V1: &str = "http-review-secret-v1.json";
const NO_REQUEST: &str = "http-review-no-request.json";

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

/// What anyone who reaches serve's port could send: a managed Secret's
/// review, for any namespace, not through the apiserver.
#[tokio::test]
async fn a_direct_review_of_a_managed_secret_gets_no_login() {
    let serve = Serve::start();
    let mut review: serde_json::Value = serde_json::from_slice(&fixture_bytes(SECRET_V1)).unwrap();
    review["request"]["dryRun"] = false.into();
    review["request"]["object"]["metadata"]["labels"] =
        serde_json::json!({"privatize.io/ecr-credentials": "managed"});
    let body = serde_json::to_vec(&review).unwrap();
    for h2 in [true, false] {
        let (status, answer, _) = serve.post("/mutate/secrets", body.clone(), h2).await;
        assert_eq!(status, 200, "{}", text(&answer));
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        // Allowed, and nothing else: no patch, so no login.
        assert_eq!(
            answer["response"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["allowed", "status", "uid"],
            "{answer}"
        );
        assert_eq!(answer["response"]["status"], serde_json::json!({}));
        let password = &common::testbed().env["TARGET_PASSWORD"];
        assert!(!answer.to_string().contains(password.as_str()));
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
        ("privatize_reviews_refused", "counter"),
        ("privatize_review_memory_bytes", "gauge"),
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
