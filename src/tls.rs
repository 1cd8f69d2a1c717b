//! Edge (pure, no I/O): certificates for the webhook. Issuing a CA and a
//! serving certificate, reading one back (validity, SANs), deciding whether to
//! keep it, and which CAs the webhooks' `caBundle` trusts during a rotation.

pub mod renewal;
mod rotation;

pub use rotation::{ca_bundle, count_certificates, issued_by, ROTATION_GRACE};

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

/// How long the CA lives.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate lives.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate with less than this left is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How far `issue` backdates notBefore, against clock skew between machines.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// What happened to the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Issued,
}

/// A CA and the serving certificate it signed, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// The names a webhook Service is reached by, plus extras, without duplicates.
pub fn service_sans(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    for san in extra {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

/// Keeps `existing` when it is still good (and not `force`d), else issues anew.
pub fn keep_or_issue(
    existing: Option<Issued>,
    sans: &[String],
    force: bool,
) -> Result<(Issued, Outcome)> {
    let now = SystemTime::now();
    if let Some(current) = existing.filter(|_| !force) {
        if let Ok(info) = inspect(current.cert_pem.as_bytes()) {
            if still_good(&info, sans, now) {
                return Ok((current, Outcome::Kept));
            }
        }
    }
    Ok((issue_at(sans, now)?, Outcome::Issued))
}

/// Issues a fresh CA (10 years) and a serving certificate (1 year) for `sans`.
pub fn issue(sans: &[String]) -> Result<Issued> {
    issue_at(sans, SystemTime::now())
}

/// Issues as [`issue`] does, as if it were `at` (tests use a past rotation).
pub fn issue_at(sans: &[String], at: SystemTime) -> Result<Issued> {
    let now = OffsetDateTime::from(at);
    let backdate = time::Duration::try_from(BACKDATE).context("backdating the certificate")?;
    let mut ca =
        CertificateParams::new(Vec::<String>::new()).context("preparing the CA certificate")?;
    ca.distinguished_name
        .push(DnType::CommonName, "privatize webhook CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - backdate;
    ca.not_after = now + CA_LIFETIME;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(sans.to_vec())
        .context("preparing the serving certificate (invalid SAN?)")?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        sans.first().cloned().unwrap_or_default(),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - backdate;
    leaf.not_after = now + SERVING_LIFETIME;
    let leaf_key = KeyPair::generate().context("generating the serving key")?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .context("signing the serving certificate")?;
    Ok(Issued {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

/// What an existing serving certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub sans: BTreeSet<String>,
}

/// Reads validity and SANs (DNS names and IPs) of the first certificate in a PEM bundle.
pub fn inspect(cert_pem: &[u8]) -> Result<CertInfo> {
    let der = CertificateDer::from_pem_slice(cert_pem).context("reading the certificate PEM")?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).context("parsing the certificate")?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let not_before = at(cert.validity().not_before);
    let not_after = at(cert.validity().not_after);
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    sans.insert(dns.to_string());
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        sans.insert(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before,
        not_after,
        sans,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Whether an existing certificate can stay: same SANs, and more than 30 days left.
pub fn still_good(info: &CertInfo, wanted_sans: &[String], now: SystemTime) -> bool {
    let wanted: BTreeSet<String> = wanted_sans.iter().cloned().collect();
    info.sans == wanted && info.not_after > now + RENEW_BEFORE
}

/// Seconds until the certificate expires (negative when it already did), for metrics.
pub fn seconds_left(info: &CertInfo, now: SystemTime) -> i64 {
    match info.not_after.duration_since(now) {
        Ok(left) => left.as_secs() as i64,
        Err(past) => -(past.duration().as_secs() as i64),
    }
}
