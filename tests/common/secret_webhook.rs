//! A stand-in for serve's Secret webhook, for tests of `refresh-secrets` alone: an
//! HTTPS server that answers Secret reviews with privatize's own pure decision
//! (`mutate::secrets::decide`) and a fixed fake token, and the URL registration
//! that scopes it to one test namespace.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use privatize::ecr::Token;
use privatize::mutate::secrets::{decide, Decision, EcrRegistry, Settings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The registry host the stand-in writes logins for.
pub const REGISTRY: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
/// The fake password it writes.
pub const PASSWORD: &str = "stand-in-token";

pub struct SecretWebhook {
    pub url: String,
    pub ca_pem: String,
    pub calls: Arc<AtomicUsize>,
}

impl SecretWebhook {
    pub fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let issued =
            privatize::tls::issue(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let certs = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let addr = super::serve_on_thread(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter) = (acceptor.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(answer(req).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("https://{addr}/mutate/secrets"),
            ca_pem: issued.ca_pem,
            calls,
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn answer(req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let review: AdmissionReview<Secret> = serde_json::from_slice(&body).unwrap();
    let request: AdmissionRequest<Secret> = review.try_into().unwrap();
    let settings = Settings {
        registry: EcrRegistry::parse(REGISTRY),
    };
    let now = SystemTime::now();
    let token = Token {
        username: "AWS".into(),
        password: PASSWORD.into(),
        expires_at: now + Duration::from_secs(12 * 3600),
    };
    let tokens = HashMap::from([(REGISTRY.to_string(), token)]);
    let response = AdmissionResponse::from(&request);
    let response = match decide(&request, &settings, &tokens, now) {
        Ok(Decision::Unchanged(_)) => response,
        Ok(Decision::Inject(injection)) => response
            .with_patch(json_patch::Patch(injection.patch))
            .unwrap(),
        Err(denial) => response.deny(denial),
    };
    // kube serialises the patch as a number array; the apiserver wants base64.
    let mut review = serde_json::to_value(response.into_review()).unwrap();
    if let Some(patch) = review["response"]["patch"].as_array() {
        let bytes: Vec<u8> = patch.iter().map(|b| b.as_u64().unwrap() as u8).collect();
        review["response"]["patch"] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(review.to_string())))
        .unwrap()
}

/// A MutatingWebhookConfiguration sending one namespace's managed Secrets (both
/// label schemes) to `url`, `failurePolicy: Fail` as installed; deleted on drop.
pub struct Registration {
    pub name: String,
}

impl Registration {
    pub async fn create(client: &kube::Client, namespace: &str, url: &str, ca_pem: &str) -> Self {
        let name = format!("privatize-test-{namespace}");
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let webhook = |suffix: &str, label: (&str, &str)| {
            serde_json::json!({
                "name": format!("{suffix}.{namespace}.test.privatize.io"),
                "clientConfig": {"url": url, "caBundle": ca},
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["secrets"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {label.0: label.1}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 10,
            })
        };
        let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "webhooks": [
                webhook("secrets", ("privatize.io/ecr-credentials", "managed")),
                webhook("legacy-secrets", ("ecr-anywhere.centml.ai/managed", "true")),
            ],
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .expect("registering the test webhook");
        Self { name }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        super::kube::delete_from_drop::<MutatingWebhookConfiguration>(&self.name);
    }
}
