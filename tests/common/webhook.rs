//! A tiny HTTPS admission webhook run by a test (not privatize's server):
//! it answers every AdmissionReview with a fixed JSON Patch and counts calls,
//! so a test can prove the apiserver really calls a URL webhook over TLS. Its
//! certificate can be swapped while it runs, as a server reloading a rotated
//! Secret does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub struct TinyWebhook {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub calls: Arc<AtomicUsize>,
    certificate: Arc<Swappable>,
}

/// The certificate the server presents, replaceable while it runs.
#[derive(Debug)]
struct Swappable(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap().clone())
    }
}

fn certified_key(issued: &privatize::tls::Issued) -> Arc<CertifiedKey> {
    let certs = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).unwrap();
    Arc::new(CertifiedKey::new(certs, signer))
}

impl TinyWebhook {
    /// Serves on 127.0.0.1 with a certificate from privatize's own issuer; every
    /// review gets `patch` (a JSON Patch array).
    pub fn start(patch: serde_json::Value) -> Self {
        let issued =
            privatize::tls::issue(&["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        Self::start_with(&issued, patch)
    }

    /// Serves with `issued`'s certificate (its SANs must name 127.0.0.1).
    pub fn start_with(issued: &privatize::tls::Issued, patch: serde_json::Value) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certificate = Arc::new(Swappable(RwLock::new(certified_key(issued))));
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let patch = Arc::new(patch);
        let addr = super::serve_on_thread(move |listener| async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, counter, patch) = (acceptor.clone(), counter.clone(), patch.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (counter, patch) = (counter.clone(), patch.clone());
                        async move { Ok::<_, hyper::Error>(answer(req, &counter, &patch).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem: issued.ca_pem.clone(),
            calls,
            certificate,
        }
    }

    /// Presents `issued`'s certificate from the next TLS handshake on.
    pub fn present(&self, issued: &privatize::tls::Issued) {
        *self.certificate.0.write().unwrap() = certified_key(issued);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    counter: &AtomicUsize,
    patch: &serde_json::Value,
) -> Response<Full<Bytes>> {
    counter.fetch_add(1, Ordering::SeqCst);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = serde_json::json!({
        "apiVersion": review["apiVersion"],
        "kind": "AdmissionReview",
        "response": {
            "uid": review["request"]["uid"],
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}
