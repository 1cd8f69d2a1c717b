//! serve renews its serving certificate in the cluster (`--tls-secret`): the
//! real `privatize serve` against the testbed's kube-apiserver, with a
//! certificate of two minutes' life renewed when 1m50s are left. The
//! webhooks (a test's own MutatingWebhookConfiguration, `failurePolicy:
//! Fail`, calling serve by URL) keep admitting pods before, during and after
//! the rotation; two replicas racing renew once; a Secret holding garbage is
//! named in one log line while serve keeps serving what it has.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::kube::{delete_from_drop, TestNamespace};
use common::serve::{CertMode, Serve, ServeOptions, TestCert};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use privatize::tls::{self, Issued};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;

const SECRET: &str = "privatize-tls";

fn sans() -> Vec<String> {
    vec!["127.0.0.1".into(), "localhost".into()]
}

/// A CA and a serving certificate for 127.0.0.1 with `life` left.
fn short_lived(life: Duration) -> Issued {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tls::issue_at(&sans(), SystemTime::now() + life - tls::SERVING_LIFETIME).unwrap()
}

fn test_cert(issued: &Issued) -> TestCert {
    TestCert {
        ca_pem: issued.ca_pem.clone(),
        cert_pem: issued.cert_pem.clone(),
        key_pem: issued.key_pem.clone(),
    }
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A test's MutatingWebhookConfiguration: two webhooks for the pods of one
/// namespace, `failurePolicy: Fail`; deleted on drop.
struct Webhooks {
    name: String,
}

impl Webhooks {
    async fn register(client: &Client, namespace: &str, ca_pem: &str) -> Self {
        let name = format!("privatize-renew-{namespace}");
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let webhook = |n: &str| {
            json!({
                "name": format!("{n}.{namespace}.renew.test.privatize.io"),
                // Nothing listens here until the test points the webhooks at serve.
                "clientConfig": {"url": "https://127.0.0.1:1/mutate/pods", "caBundle": ca},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 10,
            })
        };
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": name},
            "webhooks": [webhook("first"), webhook("second")],
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .expect("registering the test webhooks");
        Self { name }
    }

    /// Points both webhooks at `serve` (a patch that ignores the version, as a person's would).
    async fn point_at(&self, client: &Client, serve: &Serve) {
        let url = format!("https://127.0.0.1:{}/mutate/pods", serve.https.port());
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": url},
            {"op": "replace", "path": "/webhooks/1/clientConfig/url", "value": url},
        ]))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
            .unwrap();
    }

    /// Each webhook's caBundle, as the apiserver holds it.
    async fn ca_bundles(&self, client: &Client) -> Vec<String> {
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(&self.name)
            .await
            .unwrap()
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| String::from_utf8(w.client_config.ca_bundle.unwrap().0).unwrap())
            .collect()
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        delete_from_drop::<MutatingWebhookConfiguration>(&self.name);
    }
}

async fn put_secret(client: &Client, namespace: &str, ca: &str, cert: &str, key: &str) {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/managed-by": "privatize"}},
        "type": "kubernetes.io/tls",
        "data": {"ca.crt": b64(ca), "tls.crt": b64(cert), "tls.key": b64(key)},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

async fn read_secret(client: &Client, namespace: &str) -> Issued {
    let data = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(SECRET)
        .await
        .unwrap()
        .data
        .unwrap();
    let field = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    Issued {
        ca_pem: field("ca.crt"),
        cert_pem: field("tls.crt"),
        key_pem: field("tls.key"),
    }
}

/// Waits until the Secret's tls.crt is no longer `before`; the new content.
async fn wait_for_renewal(
    client: &Client,
    namespace: &str,
    before: &str,
    serves: &[&Serve],
) -> Issued {
    let start = Instant::now();
    loop {
        let now = read_secret(client, namespace).await;
        if now.cert_pem != before {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the Secret was never renewed:\n{}",
            serves
                .iter()
                .map(|s| s.log_text())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The certificate serve presents to a client trusting only `bundle` (PEM).
async fn presented(serve: &Serve, bundle: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(serve.https)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// Creates a pod through the apiserver, which calls both webhooks first.
async fn admit_pod(client: &Client, namespace: &str, name: &str) -> Result<(), String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/app:1"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `privatize_tls_certificate_renewals_total{result}` of one server.
fn renewals(serve: &Serve, result: &str) -> u64 {
    let (_, text) = serve.get("/metrics");
    let prefix = format!("privatize_tls_certificate_renewals_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

/// serve with renewal on for the test's Secret and webhooks, checking every second.
fn start_renewing(namespace: &str, webhooks: &Webhooks, cert: &Issued) -> Serve {
    let serve = Serve::start_with(ServeOptions {
        cert: CertMode::MissingFiles,
        wait_ready: false,
        ..ServeOptions::default()
            .args(["--tls-secret", SECRET, "--tls-renew-before", "1m50s"])
            .args(["--tls-renew-check-interval", "1s"])
            .args(["--webhook-config", &webhooks.name])
            .env("POD_NAMESPACE", namespace)
    });
    serve.write_certificate(&test_cert(cert));
    serve.wait_ready(Duration::from_secs(30));
    serve
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_once_and_no_admission_fails() {
    let ns = TestNamespace::new("serve-renewal").await;
    let client = ns.client.clone();
    let short = short_lived(Duration::from_secs(120));
    put_secret(
        &client,
        &ns.name,
        &short.ca_pem,
        &short.cert_pem,
        &short.key_pem,
    )
    .await;
    let webhooks = Webhooks::register(&client, &ns.name, &short.ca_pem).await;
    // Two replicas, as the Deployment runs them, on the same Secret.
    let first = start_renewing(&ns.name, &webhooks, &short);
    let second = start_renewing(&ns.name, &webhooks, &short);
    webhooks.point_at(&client, &first).await;
    admit_pod(&client, &ns.name, "before-renewal")
        .await
        .unwrap_or_else(|e| panic!("before the renewal: {e}\n{}", first.log_text()));

    let renewed = wait_for_renewal(&client, &ns.name, &short.cert_pem, &[&first, &second]).await;
    let now = SystemTime::now();
    let info = tls::inspect(renewed.cert_pem.as_bytes()).unwrap();
    assert!(
        info.not_after > now + Duration::from_secs(300 * 86400),
        "{info:?}"
    );
    assert_eq!(
        info.sans,
        tls::inspect(short.cert_pem.as_bytes()).unwrap().sans,
        "same SANs"
    );
    assert!(tls::issued_by(&renewed.cert_pem, &renewed.ca_pem, now));
    assert_ne!(renewed.ca_pem, short.ca_pem, "no CA key is kept: a new CA");
    // Every webhook trusts the new certificate, and still the one being served.
    let bundles = webhooks.ca_bundles(&client).await;
    assert_eq!(bundles.len(), 2);
    for bundle in &bundles {
        assert!(
            tls::issued_by(&renewed.cert_pem, bundle, now),
            "new CA in {bundle}"
        );
        assert!(
            tls::issued_by(&short.cert_pem, bundle, now),
            "old CA in {bundle}"
        );
    }
    // Before the files change: the old certificate, trusted through the bundle read back.
    assert_eq!(
        presented(&first, &bundles[0]).await,
        Ok(der(&short.cert_pem))
    );
    admit_pod(&client, &ns.name, "renewed-not-yet-loaded")
        .await
        .unwrap_or_else(|e| panic!("before the files changed: {e}\n{}", first.log_text()));

    // The kubelet's part: the mounted Secret's new files.
    for serve in [&first, &second] {
        serve.write_certificate(&test_cert(&renewed));
    }
    let start = Instant::now();
    loop {
        let bundle = &webhooks.ca_bundles(&client).await[0];
        match presented(&first, bundle).await {
            Ok(cert) if cert == der(&renewed.cert_pem) => break,
            other => assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve never presented the renewed certificate: {other:?}\n{}",
                first.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admit_pod(&client, &ns.name, "after-reload")
        .await
        .unwrap_or_else(|e| panic!("after the reload: {e}\n{}", first.log_text()));

    // Several more passes of both: nothing renews again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        read_secret(&client, &ns.name).await.cert_pem,
        renewed.cert_pem
    );
    let counted: Vec<u64> = [&first, &second]
        .iter()
        .map(|s| renewals(s, "renewed"))
        .collect();
    assert_eq!(
        counted.iter().sum::<u64>(),
        1,
        "one renewal in all: {counted:?}"
    );
    let winner = if counted[0] == 1 { &first } else { &second };
    let line = winner
        .wait_for_log(Duration::ZERO, |l| {
            l["message"] == "serving certificate renewed"
        })
        .expect("the renewal's log line");
    assert_eq!(
        line["secret"],
        json!(format!("{}/{SECRET}", ns.name)),
        "{line}"
    );
    assert_eq!(line["reason"], "expiring", "{line}");
    assert!(line["not_after"].is_string(), "{line}");
    for serve in [&first, &second] {
        let logs = serve.log_text();
        assert!(!logs.contains("PRIVATE KEY"), "key material in a log");
        assert!(!logs.contains(renewed.key_pem.lines().nth(1).unwrap()));
    }
    eprintln!(
        "renewed by one replica; lost races: {} and {}; CAs trusted now: {}",
        renewals(&first, "lost"),
        renewals(&second, "lost"),
        tls::count_certificates(&webhooks.ca_bundles(&client).await[0])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_holding_garbage_is_named_in_one_line_and_serve_keeps_its_certificate() {
    let ns = TestNamespace::new("serve-renewal-garbage").await;
    let client = ns.client.clone();
    let good = short_lived(Duration::from_secs(90 * 86400));
    put_secret(&client, &ns.name, &good.ca_pem, "garbage", &good.key_pem).await;
    let webhooks = Webhooks::register(&client, &ns.name, &good.ca_pem).await;
    let serve = start_renewing(&ns.name, &webhooks, &good);
    let named = format!("Secret {}/{SECRET}", ns.name);
    let line = serve
        .wait_for_log(Duration::from_secs(30), |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains(&named) && m.contains("tls.crt"))
        })
        .unwrap_or_else(|| panic!("no line naming {named}:\n{}", serve.log_text()));
    eprintln!("{line}");
    // The kubelet hands serve the garbage too: it keeps what it has.
    serve.write_certificate(&TestCert {
        cert_pem: "garbage".into(),
        ..test_cert(&good)
    });
    serve
        .wait_for_log(Duration::from_secs(10), |l| {
            l["message"] == "refusing the new certificate files; keeping what is loaded"
        })
        .unwrap_or_else(|| panic!("the garbage files were not refused:\n{}", serve.log_text()));
    assert_eq!(
        presented(&serve, &good.ca_pem).await,
        Ok(der(&good.cert_pem))
    );
    // The Secret is repaired, and the webhooks trust both certificates.
    let renewed = wait_for_renewal(&client, &ns.name, "garbage", &[&serve]).await;
    let now = SystemTime::now();
    for bundle in webhooks.ca_bundles(&client).await {
        assert!(tls::issued_by(&renewed.cert_pem, &bundle, now));
        assert!(tls::issued_by(&good.cert_pem, &bundle, now));
    }
    assert_eq!(
        tls::inspect(renewed.cert_pem.as_bytes()).unwrap().sans,
        ["127.0.0.1".to_string()].into_iter().collect(),
        "the webhooks' URL host, the only name known"
    );
    assert_eq!(renewals(&serve, "renewed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_patch_of_a_stale_read_is_refused_not_applied() {
    let ns = TestNamespace::new("serve-renewal-stale").await;
    let client = ns.client.clone();
    let old = short_lived(Duration::from_secs(3600));
    let new = short_lived(Duration::from_secs(3600));
    let webhooks = Webhooks::register(&client, &ns.name, &old.ca_pem).await;
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let stale = api.get(&webhooks.name).await.unwrap();
    // Someone else (another replica, install) writes in between.
    let other = short_lived(Duration::from_secs(3600));
    assert!(
        privatize::serve::renew::patch_ca_bundle(&client, &stale, &other.ca_pem)
            .await
            .unwrap()
    );
    let refused = privatize::serve::renew::patch_ca_bundle(&client, &stale, &new.ca_pem).await;
    assert!(!refused.unwrap(), "a patch of a stale read must be refused");
    assert_eq!(
        webhooks.ca_bundles(&client).await,
        vec![other.ca_pem.clone(); 2]
    );
    let fresh = api.get(&webhooks.name).await.unwrap();
    assert!(
        privatize::serve::renew::patch_ca_bundle(&client, &fresh, &new.ca_pem)
            .await
            .unwrap()
    );
    assert_eq!(webhooks.ca_bundles(&client).await, vec![new.ca_pem; 2]);
}

/// A rotation written to the certificate files before the webhooks' caBundle
/// learns the new CA (a `helm upgrade`: Helm applies the Secret before the
/// MutatingWebhookConfiguration): serve keeps presenting the certificate the
/// apiserver trusts, and a replica started with the new one is not ready,
/// until the bundle trusts it; then both present it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_ca_bundle_does_not_trust_yet_waits_for_it() {
    let ns = TestNamespace::new("serve-trust").await;
    let client = ns.client.clone();
    let old = short_lived(Duration::from_secs(3600));
    let new = short_lived(Duration::from_secs(3600));
    let webhooks = Webhooks::register(&client, &ns.name, &old.ca_pem).await;
    let start = |cert: &Issued, ready: bool| {
        let serve = Serve::start_with(ServeOptions {
            cert: CertMode::MissingFiles,
            wait_ready: false,
            ..ServeOptions::default().args(["--webhook-config", &webhooks.name])
        });
        serve.write_certificate(&test_cert(cert));
        if ready {
            serve.wait_ready(Duration::from_secs(30));
        }
        serve
    };
    let running = start(&old, true);
    webhooks.point_at(&client, &running).await;
    admit_pod(&client, &ns.name, "before").await.unwrap();

    // The files rotate first: still the old certificate, with one log line.
    running.write_certificate(&test_cert(&new));
    let late = start(&new, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let both = format!("{}{}", new.ca_pem, old.ca_pem);
    assert_eq!(presented(&running, &both).await, Ok(der(&old.cert_pem)));
    assert!(running
        .log_text()
        .contains("the new serving certificate waits until the webhooks' caBundle trusts its CA"));
    admit_pod(&client, &ns.name, "files-rotated")
        .await
        .unwrap_or_else(|e| panic!("the rotated files were served too early: {e}"));
    let (status, text) = late.get("/readyz");
    assert_eq!(
        (status, text.trim_end()),
        (
            503,
            "not ready: the webhooks' caBundle does not trust the serving certificate yet"
        )
    );

    // The bundle learns the new CA: both present the new certificate.
    let ca = base64::engine::general_purpose::STANDARD.encode(&both);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": ca},
        {"op": "replace", "path": "/webhooks/1/clientConfig/caBundle", "value": ca},
    ]))
    .unwrap();
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            &webhooks.name,
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .unwrap();
    late.wait_ready(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(&running, &both).await != Ok(der(&new.cert_pem)) {
        assert!(Instant::now() < deadline, "{}", running.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(presented(&late, &both).await, Ok(der(&new.cert_pem)));
    admit_pod(&client, &ns.name, "after").await.unwrap();
}
