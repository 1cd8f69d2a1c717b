//! When serve renews its serving certificate in the cluster, and what the
//! webhooks' `caBundle` holds at each step. Pure: the inputs are what serve
//! read (the TLS Secret, each webhook's `caBundle`, the names the webhooks
//! call serve by); the I/O and its order live in `serve/renew.rs`.
//!
//! The CA key is not kept anywhere, so a renewal issues a new CA too. The
//! order is what keeps every admission working: the `caBundle` first trusts
//! the new CA next to every CA that may still serve, only then does the
//! Secret change, and the old CAs leave on a later pass once the rotation
//! has settled (`ca_bundle`: an hour after the renewal).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{ca_bundle, count_certificates, inspect, issued_by, CertInfo, Issued};

/// Why the serving certificate is renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It has less than renew-before left (`left` may be negative: expired).
    Expiring { left: i64 },
    /// The Secret holds no usable CA, certificate and key (the cause).
    Unusable(String),
    /// Its own `ca.crt` does not verify it.
    NotFromItsCa,
    /// It lacks names the webhooks call serve by.
    NamesMissing(Vec<String>),
}

impl Reason {
    /// A short label for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Expiring { .. } => "expiring",
            Reason::Unusable(_) => "unusable",
            Reason::NotFromItsCa => "not-from-its-ca",
            Reason::NamesMissing(_) => "names-missing",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Expiring { left } if *left <= 0 => {
                write!(f, "the certificate expired {}s ago", -left)
            }
            Reason::Expiring { left } => write!(f, "the certificate has {left}s left"),
            Reason::Unusable(cause) => write!(f, "no usable certificate: {cause}"),
            Reason::NotFromItsCa => f.write_str("the certificate is not signed by its ca.crt"),
            Reason::NamesMissing(names) => {
                write!(f, "the certificate lacks {}", names.join(", "))
            }
        }
    }
}

/// What one pass does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The certificate stays. `bundle`: a `caBundle` to register on every
    /// webhook, when one of them should change (the current CA missing, or
    /// an old CA that may leave).
    Keep { bundle: Option<String> },
    /// Issue a new CA and serving certificate for `sans`, register
    /// [`bundle_for_renewal`], and only then write the Secret.
    Renew { reason: Reason, sans: Vec<String> },
}

/// Decides one pass. `secret`: what the Secret's `ca.crt`, `tls.crt` and
/// `tls.key` hold (`Err`: what is missing); `registered`: each webhook's
/// `caBundle` (PEM, empty when it has none); `names`: the hosts the webhooks
/// call serve by.
pub fn plan(
    secret: std::result::Result<&Issued, &str>,
    registered: &[String],
    names: &[String],
    renew_before: Duration,
    now: SystemTime,
) -> Plan {
    let renew = |reason: Reason, info: Option<&CertInfo>| Plan::Renew {
        reason,
        sans: renewal_sans(info, names),
    };
    let current = match secret {
        Ok(current) => current,
        Err(cause) => return renew(Reason::Unusable(cause.to_string()), None),
    };
    let info = match usable(current) {
        Ok(info) => info,
        Err(err) => return renew(Reason::Unusable(format!("{err:#}")), None),
    };
    let left = super::seconds_left(&info, now);
    if info.not_after <= now + renew_before {
        return renew(Reason::Expiring { left }, Some(&info));
    }
    if !issued_by(&current.cert_pem, &current.ca_pem, now) {
        return renew(Reason::NotFromItsCa, Some(&info));
    }
    let missing = missing_names(&info, names);
    if !missing.is_empty() {
        return renew(Reason::NamesMissing(missing), Some(&info));
    }
    let bundle = ca_bundle(Some(&registered.concat()), current, now).ok();
    Plan::Keep {
        bundle: bundle.filter(|b| registered.iter().any(|r| r != b)),
    }
}

/// The `caBundle` to register before the Secret gets `renewed`: the new CA
/// first, then every CA that may still serve (each webhook's `caBundle` and
/// the Secret's `ca.crt` as it is now), without expired or unreadable ones.
pub fn bundle_for_renewal(
    renewed: &Issued,
    registered: &[String],
    secret_ca: Option<&str>,
    now: SystemTime,
) -> Result<String> {
    let mut existing = registered.concat();
    if let Some(ca) = secret_ca {
        existing.push_str(ca);
    }
    let bundle = ca_bundle(Some(&existing), renewed, now)?;
    if !bundle.starts_with(&renewed.ca_pem) {
        bail!("the renewal's caBundle does not start with its CA");
    }
    Ok(bundle)
}

/// Whether every webhook's `caBundle` trusts `cert_pem` (what a replica
/// serving it needs).
pub fn trusted_by_all(cert_pem: &str, registered: &[String], now: SystemTime) -> bool {
    !registered.is_empty() && registered.iter().all(|b| issued_by(cert_pem, b, now))
}

/// The host a webhook `clientConfig.url` calls (`https://HOST[:PORT]/path`),
/// without IPv6 brackets.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    };
    let host = host.trim_matches(['[', ']']);
    (!host.is_empty()).then(|| host.to_string())
}

/// The SANs of a renewed certificate: the names the webhooks call serve by,
/// then the other SANs the certificate had (extras of `gen-certs --san`).
fn renewal_sans(info: Option<&CertInfo>, names: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = Vec::new();
    for name in names.iter().map(|n| normalize(n)) {
        if !sans.contains(&name) {
            sans.push(name);
        }
    }
    for san in info.map(|i| i.sans.iter()).into_iter().flatten() {
        if !sans.contains(san) {
            sans.push(san.clone());
        }
    }
    sans
}

/// Names the webhooks call serve by that the certificate does not carry.
fn missing_names(info: &CertInfo, names: &[String]) -> Vec<String> {
    let have: BTreeSet<String> = info.sans.iter().map(|s| normalize(s)).collect();
    names
        .iter()
        .map(|n| normalize(n))
        .filter(|n| !have.contains(n))
        .collect()
}

/// DNS names compare case-insensitively; an IPv6 host may come bracketed.
fn normalize(name: &str) -> String {
    name.trim_matches(['[', ']']).to_ascii_lowercase()
}

/// Reads the certificate, checks the key belongs to it and `ca.crt` holds a CA.
fn usable(issued: &Issued) -> Result<CertInfo> {
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("reading tls.crt")?;
    if chain.is_empty() {
        bail!("no certificate in tls.crt");
    }
    let info = inspect(issued.cert_pem.as_bytes()).context("reading tls.crt")?;
    let key =
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).context("reading tls.key")?;
    CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
        .context("tls.key does not belong to tls.crt")?;
    if count_certificates(&issued.ca_pem) == 0 {
        bail!("no certificate in ca.crt");
    }
    Ok(info)
}

#[cfg(test)]
#[path = "renewal_tests.rs"]
mod tests;
