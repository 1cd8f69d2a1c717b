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

    // --force rotates: a new CA lands in the Secret and in every webhook,
    // next to the old one (see the rotation test below).
    let third = run(&["--force"]);
    assert!(third.status.success(), "{}", stderr(&third));
    assert!(
        stdout(&third).contains(
            "caBundle: the current CA and 1 previous, trusted until the rotation settles (the first run 60 minutes after it drops them)"
        ),
        "{}",
        stdout(&third)
    );
    let rotated = String::from_utf8(
        secrets.get("privatize-tls").await.unwrap().data.unwrap()["ca.crt"]
            .0
            .clone(),
    )
    .unwrap();
    assert_ne!(rotated, ca_pem);
    let config = configs.get(&name).await.unwrap();
    for webhook in config.webhooks.unwrap() {
        assert_eq!(
            certificates(&webhook.client_config.ca_bundle.unwrap().0),
            [
                certificates(rotated.as_bytes()),
                certificates(ca_pem.as_bytes())
            ]
            .concat(),
            "{}",
            webhook.name
        );
    }
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

/// The DER of each certificate in a PEM bundle, in order.
fn certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_still_presenting_the_old_certificate_is_called_across_a_rotation() {
    let ns = TestNamespace::new("rotation").await;
    let sans = privatize::tls::service_sans("privatize", &ns.name, &["127.0.0.1".to_string()]);
    let client = ns.client.clone();
    let old = privatize::tls::issue(&sans).unwrap();
    privatize::k8s::apply(
        &client,
        &privatize::k8s::tls_secret(&ns.name, "privatize-tls", &old).unwrap(),
    )
    .await
    .unwrap();
    // A "pod" serving the Secret's certificate, called by URL for pods in this namespace only.
    let hook = TinyWebhook::start_with(
        &old,
        serde_json::json!([{"op": "add", "path": "/metadata/labels", "value": {"admitted": "yes"}}]),
    );
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = format!("{}-rotation", ns.name);
    let url = format!("https://{}/mutate", hook.addr);
    let mut config = webhook_config(&name, &ns.name, &url, Some(&old.ca_pem));
    config.webhooks.as_mut().unwrap().truncate(1);
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let admit = |pod_name: &'static str| {
        let pods = pods.clone();
        async move {
            let created = pods
                .create(&PostParams::default(), &pod(pod_name))
                .await
                .unwrap_or_else(|e| panic!("creating pod {pod_name}: {e}"));
            assert_eq!(
                created.labels().get("admitted").map(String::as_str),
                Some("yes"),
                "{pod_name} was not admitted by the webhook"
            );
        }
    };
    let gen_certs = |extra: &[&str]| {
        let out = privatize()
            .args([
                "gen-certs",
                "--service",
                "privatize",
                "--namespace",
                &ns.name,
            ])
            .args(["--secret", "privatize-tls", "--webhook-config", &name])
            .args(["--san", "127.0.0.1"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let bundle = || async {
        let config = configs.get(&name).await.unwrap();
        certificates(
            &config.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .clone()
                .unwrap()
                .0,
        )
    };
    admit("before").await;

    // Rotation: a new CA and certificate in the Secret. The server has not
    // reloaded yet and still presents the old certificate.
    let out = gen_certs(&["--force"]);
    assert!(out.starts_with("certificate issued"), "{out}");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let new_ca = secrets.get("privatize-tls").await.unwrap().data.unwrap()["ca.crt"]
        .0
        .clone();
    assert_ne!(certificates(&new_ca), certificates(old.ca_pem.as_bytes()));
    admit("during").await;
    assert_eq!(
        bundle().await,
        [certificates(&new_ca), certificates(old.ca_pem.as_bytes())].concat(),
        "the new CA first, the old one next to it"
    );

    // The server reloads the rotated Secret.
    let rotated = privatize::k8s::read_tls_secret(&client, &ns.name, "privatize-tls")
        .await
        .unwrap()
        .unwrap();
    hook.present(&rotated);
    admit("after").await;

    // A run inside the grace period keeps both CAs and changes nothing.
    let rv = configs.get(&name).await.unwrap().resource_version();
    let out = gen_certs(&[]);
    assert!(out.starts_with("certificate kept"), "{out}");
    assert_eq!(configs.get(&name).await.unwrap().resource_version(), rv);

    // Once the rotation has settled (the Secret's certificate, issued by the
    // current CA, is older than the grace), the next run drops the old CA.
    let settled = privatize::tls::issue_at(
        &sans,
        std::time::SystemTime::now() - privatize::tls::ROTATION_GRACE,
    )
    .unwrap();
    privatize::k8s::apply(
        &client,
        &privatize::k8s::tls_secret(&ns.name, "privatize-tls", &settled).unwrap(),
    )
    .await
    .unwrap();
    privatize::k8s::patch_ca_bundle(
        &client,
        &name,
        &format!("{}{}", settled.ca_pem, rotated.ca_pem),
    )
    .await
    .unwrap();
    hook.present(&settled);
    let out = gen_certs(&[]);
    assert!(out.starts_with("certificate kept"), "{out}");
    assert_eq!(bundle().await, certificates(settled.ca_pem.as_bytes()));
    admit("settled").await;
    assert!(hook.calls() >= 4);
    configs
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
