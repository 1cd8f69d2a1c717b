//! Trust before serve: a serving certificate is only worth presenting once
//! the apiserver trusts it, i.e. once the caBundle of every webhook in serve's
//! MutatingWebhookConfiguration (`--webhook-config`) verifies its chain. A
//! `helm upgrade` that rotates the CA writes the Secret before the webhook
//! configuration (Helm applies by kind), so a replica whose volume refreshed
//! in between, or a new replica Ready in between, would present a
//! certificate no apiserver trusts yet: a failed webhook call. The checks
//! here are asked by `tls.rs` (a reloaded certificate waits) and readiness
//! (a new replica is not Ready before).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::Api;
use kube::Client;
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::RootCertStore;

/// Time limit of one read of the webhook configuration.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads serve's webhook configuration to see whether it trusts a chain.
pub struct Trust {
    client: Client,
    webhook_config: String,
}

impl Trust {
    pub fn new(client: Client, webhook_config: String) -> Self {
        Self {
            client,
            webhook_config,
        }
    }

    /// Some(true): every webhook with a caBundle verifies `chain`;
    /// Some(false): one does not; None: nothing to wait for (no such
    /// configuration, no caBundle in it, or it cannot be read now).
    pub async fn trusts(&self, chain: &[CertificateDer<'static>]) -> Option<bool> {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = match tokio::time::timeout(READ_TIMEOUT, api.get_opt(&self.webhook_config))
            .await
        {
            Ok(Ok(config)) => config?,
            Ok(Err(err)) => {
                tracing::debug!(webhook_config = %self.webhook_config, error = %err, "reading the webhook configuration for its caBundle");
                return None;
            }
            Err(_) => return None,
        };
        let bundles: Vec<Vec<u8>> = config
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.client_config.ca_bundle.map(|b| b.0))
            .filter(|b| !b.is_empty())
            .collect();
        if bundles.is_empty() {
            return None;
        }
        Some(bundles.iter().all(|b| bundle_trusts(b, chain)))
    }
}

/// Whether a PEM bundle of CAs verifies `chain` (leaf first) now.
pub fn bundle_trusts(bundle_pem: &[u8], chain: &[CertificateDer<'_>]) -> bool {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle_pem).flatten() {
        let _ = roots.add(cert);
    }
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        return false;
    };
    let algorithms = aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        intermediates,
        UnixTime::now(),
        algorithms,
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap())
            .collect()
    }

    #[test]
    fn a_bundle_trusts_what_one_of_its_cas_signed() {
        let _ = aws_lc_rs::default_provider().install_default();
        let sans = vec!["127.0.0.1".to_string()];
        let old = crate::tls::issue(&sans).unwrap();
        let new = crate::tls::issue(&sans).unwrap();
        let both = format!("{}{}", new.ca_pem, old.ca_pem);
        assert!(bundle_trusts(old.ca_pem.as_bytes(), &chain(&old.cert_pem)));
        assert!(!bundle_trusts(old.ca_pem.as_bytes(), &chain(&new.cert_pem)));
        assert!(bundle_trusts(both.as_bytes(), &chain(&new.cert_pem)));
        assert!(bundle_trusts(both.as_bytes(), &chain(&old.cert_pem)));
        assert!(!bundle_trusts(b"not pem", &chain(&old.cert_pem)));
        assert!(!bundle_trusts(old.ca_pem.as_bytes(), &[]));
    }
}
