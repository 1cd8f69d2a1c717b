//! The testbed's real kube-apiserver calls URL webhooks over TLS, and
//! `privatize gen-certs` writes files, the TLS Secret and the caBundle.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::kube::{privatize, TestNamespace};
use common::webhook::TinyWebhook;
use common::{stderr, stdout};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
    }))
    .unwrap()
}

fn webhook_config(
    name: &str,
    namespace: &str,
    url: &str,
    ca_pem: Option<&str>,
) -> MutatingWebhookConfiguration {
    let mut client_config = serde_json::json!({"url": url});
    if let Some(ca) = ca_pem {
        client_config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    let hook = |n: &str| {
        serde_json::json!({
            "name": n,
            "clientConfig": client_config,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5
        })
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "webhooks": [hook("one.test.privatize.io"), hook("two.test.privatize.io")]
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_calls_a_url_webhook_and_applies_its_patch() {
    let ns = TestNamespace::new("proof").await;
    let hook = TinyWebhook::start(
        serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"proof": "patched"}}]),
    );
    let configs: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    let name = format!("{}-proof", ns.name);
    let url = format!("https://{}/mutate", hook.addr);
    let mut config = webhook_config(&name, &ns.name, &url, Some(&hook.ca_pem));
    config.webhooks.as_mut().unwrap().truncate(1);
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("proof"))
        .await
        .unwrap();
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    assert!(hook.calls() >= 1, "the apiserver never called the webhook");
    assert_eq!(
        created.labels().get("proof").map(String::as_str),
        Some("patched")
    );
    let read_back = pods.get("proof").await.unwrap();
    assert_eq!(
        read_back.labels().get("proof").map(String::as_str),
        Some("patched")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_certs_writes_the_secret_patches_ca_bundle_and_is_idempotent() {
    let ns = TestNamespace::new("gencerts").await;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(ns.client.clone());
    let name = format!("{}-certs", ns.name);
    configs
        .create(
            &PostParams::default(),
            &webhook_config(&name, &ns.name, "https://127.0.0.1:1/x", None),
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("privatize-{}", ns.name));
    let run = |extra: &[&str]| {
        let mut cmd = privatize();
        cmd.args([
            "gen-certs",
            "--service",
            "privatize",
            "--namespace",
            &ns.name,
            "--secret",
            "privatize-tls",
            "--webhook-config",
            &name,
            "--san",
            "127.0.0.1",
        ])
        .arg("--out-dir")
        .arg(&dir)
        .args(extra);
        cmd.output().unwrap()
    };

    let first = run(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).starts_with("certificate issued"),
        "{}",
        stdout(&first)
    );
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let secret = secrets.get("privatize-tls").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.clone().unwrap();
    let ca_pem = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    let cert_pem = String::from_utf8(data["tls.crt"].0.clone()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("tls.crt")).unwrap(),
        cert_pem,
        "files and Secret agree"
    );
    let info = privatize::tls::inspect(cert_pem.as_bytes()).unwrap();
    let svc = |s: &str| s.replace("NS", &ns.name);
    let expected: std::collections::BTreeSet<String> = [
        "privatize",
        "privatize.NS",
        "privatize.NS.svc",
        "privatize.NS.svc.cluster.local",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| svc(s))
    .collect();
    assert_eq!(info.sans, expected);
    let config = configs.get(&name).await.unwrap();
    for webhook in config.webhooks.as_ref().unwrap() {
        assert_eq!(
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone()),
            Some(ca_pem.clone().into_bytes()),
            "{}",
            webhook.name
        );
    }

    // Second run: nothing changes, not even a resourceVersion.
    let (secret_rv, config_rv) = (secret.resource_version(), config.resource_version());
    let second = run(&[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second).starts_with("certificate kept"),
        "{}",
        stdout(&second)
    );
    assert_eq!(
        secrets
            .get("privatize-tls")
            .await
            .unwrap()
            .resource_version(),
        secret_rv
    );
    assert_eq!(
        configs.get(&name).await.unwrap().resource_version(),
        config_rv
    );

    // --force rotates: a new CA lands in the Secret and in every webhook.
    let third = run(&["--force"]);
    assert!(third.status.success(), "{}", stderr(&third));
    let rotated = String::from_utf8(
        secrets.get("privatize-tls").await.unwrap().data.unwrap()["ca.crt"]
            .0
            .clone(),
    )
    .unwrap();
    assert_ne!(rotated, ca_pem);
    let config = configs.get(&name).await.unwrap();
    assert!(config.webhooks.unwrap().iter().all(|w| w
        .client_config
        .ca_bundle
        .as_ref()
        .map(|b| b.0.clone())
        == Some(rotated.clone().into_bytes())));
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rustls_client_trusting_the_ca_accepts_the_serving_certificate() {
    let dir = std::env::temp_dir().join(format!("privatize-rustls-{}", common::unique()));
    let out = privatize()
        .args(["gen-certs", "--service", "hook", "--namespace", "team"])
        .arg("--out-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let certs = CertificateDer::pem_slice_iter(&read("tls.crt"))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("tls.key")).unwrap();
    let server = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read("ca.crt")).unwrap())
        .unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    tokio::spawn(async move {
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        }
    });
    let connector = tokio_rustls::TlsConnector::from(client);
    let good = connector
        .connect(
            ServerName::try_from("hook.team.svc").unwrap(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        )
        .await;
    assert!(good.is_ok(), "hook.team.svc must verify: {:?}", good.err());
    let wrong = connector
        .connect(
            ServerName::try_from("other.team.svc").unwrap(),
            tokio::net::TcpStream::connect(addr).await.unwrap(),
        )
        .await;
    assert!(wrong.is_err(), "a name outside the SANs must be refused");
    let _ = std::fs::remove_dir_all(&dir);
}
