//! `serve --client-ca-file`: both webhooks answer only callers presenting a
//! client certificate signed by that CA. The testbed's kube-apiserver
//! presents one to every webhook that asks (its AdmissionConfiguration,
//! `testbed/kube/up`), so reviews through it pass while a direct caller
//! without the certificate, or with one of another CA, gets no answer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kube::{kubeconfig_path, TestNamespace};
use common::secret_webhook::Registration;
use common::serve::{fixture_bytes, Serve, ServeOptions};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// The testbed apiserver's PKI directory.
fn pki() -> PathBuf {
    kubeconfig_path().parent().unwrap().join("pki")
}

/// A POST of a review to serve with curl, optionally with a client
/// certificate; curl's exit code and the HTTP status.
fn curl(serve: &Serve, path: &str, cert: Option<(&Path, &Path)>) -> (i32, String) {
    let ca = serve.dir.join("ca-for-curl.pem");
    std::fs::write(&ca, &serve.cas[0]).unwrap();
    let body = serve.dir.join("review.json");
    std::fs::write(&body, fixture_bytes("http-review-pod-v1.json")).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ])
    .arg("--cacert")
    .arg(&ca)
    .args(["-H", "content-type: application/json", "--data-binary"])
    .arg(format!("@{}", body.display()));
    if let Some((cert, key)) = cert {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://{}{path}", serve.https))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn enabled_namespace(test: &str) -> TestNamespace {
    let ns = TestNamespace::new(test).await;
    Api::<Namespace>::all(ns.client.clone())
        .patch(
            &ns.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"privatize.io/ecr-credentials": "enabled"}}}),
            ),
        )
        .await
        .unwrap();
    ns
}

fn managed_secret(name: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"privatize.io/ecr-credentials": "managed"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    }))
    .unwrap()
}

#[tokio::test]
async fn with_a_client_ca_only_the_apiservers_certificate_gets_an_answer() {
    let ns = enabled_namespace("client_cert").await;
    let serve = Serve::start_with(
        ServeOptions::default()
            .arg("--client-ca-file")
            .arg(pki().join("webhook-client-ca.crt").to_string_lossy()),
    );
    let (cert, key) = (
        pki().join("webhook-client.crt"),
        pki().join("webhook-client.key"),
    );

    // Direct callers: without a certificate, or with another CA's, nothing.
    for path in ["/mutate/pods", "/mutate/secrets"] {
        let (code, status) = curl(&serve, path, None);
        assert_ne!(
            code, 0,
            "{path}: answered {status} without a client certificate"
        );
        assert_eq!(status, "000", "{path}");
        let (code, status) = curl(
            &serve,
            path,
            Some((&pki().join("admin.crt"), &pki().join("admin.key"))),
        );
        assert_ne!(
            code, 0,
            "{path}: answered {status} to another CA's certificate"
        );
        // The apiserver's certificate gets the review answered.
        let (code, status) = curl(&serve, path, Some((&cert, &key)));
        assert_eq!(
            (code, status.as_str()),
            (0, if path == "/mutate/pods" { "200" } else { "400" }),
            "{path}"
        );
    }

    // Through the apiserver (failurePolicy Fail): the Secret is admitted.
    let url = format!("https://{}/mutate/secrets", serve.https);
    let _registration = Registration::create(&ns.client, &ns.name, &url, &serve.cas[0]).await;
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = api
            .create(&PostParams::default(), &managed_secret("pull"))
            .await;
        let seen = serve
            .logs()
            .iter()
            .any(|l| l.contains(r#""message":"admission""#) && l.contains(&ns.name));
        match created {
            Ok(_) if seen => break,
            Ok(_) => {
                // Created before the registration took effect: try again.
                api.delete("pull", &Default::default()).await.unwrap();
            }
            Err(err) => assert!(
                Instant::now() < deadline,
                "the apiserver's reviews never got through: {err}\n{}",
                serve.log_text()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_serve_trusting_another_ca_refuses_the_apiserver_and_the_secret_is_not_stored() {
    let ns = enabled_namespace("client_cert_other").await;
    // Trusts the apiserver's main CA, not the CA of the webhook client certificate.
    let serve = Serve::start_with(
        ServeOptions::default()
            .arg("--client-ca-file")
            .arg(pki().join("ca.crt").to_string_lossy()),
    );
    let url = format!("https://{}/mutate/secrets", serve.https);
    let _registration = Registration::create(&ns.client, &ns.name, &url, &serve.cas[0]).await;
    let api = Api::<Secret>::namespaced(ns.client.clone(), &ns.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match api
            .create(&PostParams::default(), &managed_secret("pull"))
            .await
        {
            Err(err) => break err.to_string(),
            Ok(_) => {
                api.delete("pull", &Default::default()).await.unwrap();
                assert!(Instant::now() < deadline, "never refused");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        refused.contains(&format!(
            "failed calling webhook \"secrets.{}.test.privatize.io\"",
            ns.name
        )),
        "{refused}"
    );
    assert!(api.get_opt("pull").await.unwrap().is_none());
    assert!(
        !serve
            .logs()
            .iter()
            .any(|l| l.contains(r#""message":"admission""#)),
        "serve answered a review:\n{}",
        serve.log_text()
    );
}

#[test]
fn an_unreadable_client_ca_file_stops_serve_naming_it() {
    let dir = std::env::temp_dir().join(format!("privatize-client-ca-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let cert = common::serve::TestCert::issue();
    for (file, message) in [
        (
            dir.join("missing.pem"),
            format!(
                "reading the client CA file {}: No such file or directory",
                dir.join("missing.pem").display()
            ),
        ),
        (
            empty.clone(),
            format!("no certificate in the client CA file {}", empty.display()),
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_privatize"))
            .env("KUBECONFIG", kubeconfig_path())
            .args(["serve", "--https-port", "0", "--http-port", "0"])
            .arg("--client-ca-file")
            .arg(&file)
            .env("SERVER_TLS_CERT", &cert.cert_pem)
            .env("SERVER_TLS_KEY", &cert.key_pem)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = common::stderr(&out);
        assert!(stderr.contains(&message), "{stderr}");
    }
}
