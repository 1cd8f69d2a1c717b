//! Which CAs the webhooks' `caBundle` trusts: the current CA, plus the
//! previous ones for as long as a pod may still serve a certificate they signed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use base64::Engine as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use super::{inspect, Issued};

/// A rotation has settled once the serving certificate in the Secret is this
/// old by its notBefore. `issue` backdates notBefore by an hour, so for
/// privatize's own certificates that is one hour after the rotation: far
/// more than the minute or two kubelet takes to refresh a mounted Secret.
pub const ROTATION_GRACE: Duration = Duration::from_secs(2 * 3600);

/// The `caBundle` for the webhooks, as PEM: the current CA (`current.ca_pem`
/// as is), then every other CA of the `existing` bundle that may still be in
/// use. An old CA stays until it expires or the rotation has settled: the
/// serving certificate is issued by the current CA and its notBefore is at
/// least [`ROTATION_GRACE`] before `now`. Same inputs, same bytes, so a run
/// with nothing to change patches nothing.
pub fn ca_bundle(existing: Option<&str>, current: &Issued, now: SystemTime) -> Result<String> {
    let mut bundle = current.ca_pem.clone();
    if !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    let mut seen = certificates(&current.ca_pem);
    if seen.is_empty() {
        return Err(anyhow::anyhow!("no certificate in the CA PEM")).context("building caBundle");
    }
    let Some(existing) = existing else {
        return Ok(bundle);
    };
    let settled = settled(current, now);
    for der in certificates(existing) {
        if seen.contains(&der) {
            continue;
        }
        seen.push(der.clone());
        if !settled && !expired(&der, now) {
            bundle.push_str(&pem(&der));
        }
    }
    Ok(bundle)
}

/// Whether `cert_pem` verifies against `ca_pem` for its own first SAN at `now`.
pub fn issued_by(cert_pem: &str, ca_pem: &str, now: SystemTime) -> bool {
    let Ok(leaf) = CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    for ca in certificates(ca_pem) {
        let _ = roots.add(CertificateDer::from(ca));
    }
    let name = inspect(cert_pem.as_bytes())
        .ok()
        .and_then(|info| info.sans.into_iter().next())
        .and_then(|san| ServerName::try_from(san).ok());
    let Some(name) = name else {
        return false;
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::since_unix_epoch(now))
        .is_ok()
}

/// How many certificates a PEM text holds (e.g. CAs in a bundle).
pub fn count_certificates(pem_text: &str) -> usize {
    certificates(pem_text).len()
}

/// Every pod has had [`ROTATION_GRACE`] to load the current serving certificate.
fn settled(current: &Issued, now: SystemTime) -> bool {
    let Ok(info) = inspect(current.cert_pem.as_bytes()) else {
        return false;
    };
    info.not_before + ROTATION_GRACE <= now && issued_by(&current.cert_pem, &current.ca_pem, now)
}

/// A certificate that cannot be read counts as expired: nobody can use it.
fn expired(der: &[u8], now: SystemTime) -> bool {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let not_after = cert.validity().not_after.timestamp().max(0) as u64;
            SystemTime::UNIX_EPOCH + Duration::from_secs(not_after) <= now
        }
        Err(_) => true,
    }
}

/// The DER of every readable certificate in a PEM text, in order.
fn certificates(pem_text: &str) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .filter_map(|c| c.ok())
        .map(|c| c.as_ref().to_vec())
        .collect()
}

fn pem(der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        out.extend(line.iter().map(|&b| char::from(b)));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::issue_at;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn sans() -> Vec<String> {
        vec!["privatize.privatize.svc".into(), "127.0.0.1".into()]
    }

    fn cas(bundle: &str) -> Vec<Vec<u8>> {
        certificates(bundle)
    }

    #[test]
    fn a_first_bundle_is_the_current_ca_as_is() {
        let now = SystemTime::now();
        let current = issue_at(&sans(), now).unwrap();
        assert_eq!(ca_bundle(None, &current, now).unwrap(), current.ca_pem);
        assert_eq!(
            ca_bundle(Some(&current.ca_pem), &current, now).unwrap(),
            current.ca_pem
        );
    }

    #[test]
    fn a_fresh_rotation_keeps_the_old_ca_next_to_the_new_one() {
        let now = SystemTime::now();
        let old = issue_at(&sans(), now - 100 * DAY).unwrap();
        let new = issue_at(&sans(), now).unwrap();
        let bundle = ca_bundle(Some(&old.ca_pem), &new, now).unwrap();
        assert_eq!(
            cas(&bundle),
            [cas(&new.ca_pem), cas(&old.ca_pem)].concat(),
            "new CA first, then the old one"
        );
        assert!(bundle.starts_with(&new.ca_pem));
        // Later runs inside the grace period change nothing, byte for byte.
        let later = now + ROTATION_GRACE - 2 * HOUR;
        assert_eq!(ca_bundle(Some(&bundle), &new, later).unwrap(), bundle);
    }

    #[test]
    fn the_old_ca_leaves_once_the_rotation_has_settled() {
        let now = SystemTime::now();
        let old = issue_at(&sans(), now - 100 * DAY).unwrap();
        let new = issue_at(&sans(), now).unwrap();
        let bundle = ca_bundle(Some(&old.ca_pem), &new, now).unwrap();
        // notBefore is backdated an hour: the grace ends an hour after issuing.
        let just_before = now + ROTATION_GRACE - HOUR - Duration::from_secs(60);
        assert_eq!(
            cas(&ca_bundle(Some(&bundle), &new, just_before).unwrap()).len(),
            2
        );
        let after = now + ROTATION_GRACE - HOUR + Duration::from_secs(60);
        assert_eq!(ca_bundle(Some(&bundle), &new, after).unwrap(), new.ca_pem);
    }

    #[test]
    fn an_expired_old_ca_leaves_at_once() {
        let now = SystemTime::now();
        let ancient = issue_at(&sans(), now - 11 * 365 * DAY).unwrap();
        let new = issue_at(&sans(), now).unwrap();
        assert_eq!(
            ca_bundle(Some(&ancient.ca_pem), &new, now).unwrap(),
            new.ca_pem
        );
    }

    #[test]
    fn old_cas_stay_while_the_serving_certificate_is_not_from_the_current_ca() {
        let now = SystemTime::now();
        let old = issue_at(&sans(), now - 100 * DAY).unwrap();
        let other = issue_at(&sans(), now - DAY).unwrap();
        let mismatched = Issued {
            ca_pem: other.ca_pem.clone(),
            ..issue_at(&sans(), now - DAY).unwrap()
        };
        let bundle = ca_bundle(Some(&old.ca_pem), &mismatched, now).unwrap();
        assert_eq!(cas(&bundle).len(), 2, "not settled: keep what may serve");
    }

    #[test]
    fn issued_by_checks_the_signature_not_the_name() {
        let now = SystemTime::now();
        let one = issue_at(&sans(), now).unwrap();
        let two = issue_at(&sans(), now).unwrap();
        assert!(issued_by(&one.cert_pem, &one.ca_pem, now));
        // Both CAs are called "privatize webhook CA": only the key tells them apart.
        assert!(!issued_by(&one.cert_pem, &two.ca_pem, now));
        assert!(issued_by(
            &one.cert_pem,
            &format!("{}{}", two.ca_pem, one.ca_pem),
            now
        ));
    }

    #[test]
    fn unreadable_entries_of_an_existing_bundle_are_dropped() {
        let now = SystemTime::now();
        let new = issue_at(&sans(), now).unwrap();
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(ca_bundle(Some(junk), &new, now).unwrap(), new.ca_pem);
    }
}
