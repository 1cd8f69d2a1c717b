//! `privatize serve` as the real binary, TLS and lifecycle: plain HTTP on the
//! TLS port, slow clients, certificate hot reload and env PEM, readiness, and
//! graceful shutdown on SIGTERM/SIGINT.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::serve::{
    fixture_bytes, read_until_closed, text, CertMode, Serve, ServeOptions, TestCert,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

const POD_V1: &str = "http-review-pod-v1.json";

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
async fn sigterm_fails_readyz_first_answers_late_connections_once_finishes_the_admission_in_flight_and_exits_0(
) {
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

    // After the delay: still accepting (endpoints may not have caught up);
    // a connection made now is answered once and then closed by serve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, late_answer, protocol) = serve.post("/mutate/pods", body.clone(), true).await;
    assert_eq!(
        (status, protocol.as_slice()),
        (200, b"h2".as_slice()),
        "{}",
        text(&late_answer)
    );
    let mut late = serve.connect_tls(&[b"http/1.1"]).await.unwrap();
    // Keep-alive asked for: serve closes it anyway, after the answer.
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: privatize\r\n\r\n")
        .await
        .unwrap();
    late.flush().await.unwrap();
    let answer = read_until_closed(&mut late, Duration::from_secs(5))
        .await
        .map(|a| text(&a))
        .expect("a late connection closed after its answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The request in flight since before the signal goes on.
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

    // No connection for the quiet time (the 1 s delay here): the listeners
    // close and serve exits 0.
    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("serve exits");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        serve.log_text()
    );
    assert!(
        std::net::TcpStream::connect(serve.https).is_err(),
        "HTTPS still accepting after the exit"
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

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let serve = Serve::start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(serve.roots())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(serve.https).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
    }
}
