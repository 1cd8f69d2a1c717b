//! Pure: what `install` and `serve` agree on about copy Jobs besides their
//! command: the pod template users place them with (`template`), and the CA
//! ConfigMap that brings `--ca-file` certificates into them.

pub mod template;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The ConfigMap with the extra CA certificates (`install --ca-file`), in
/// privatize's namespace; serve and every copy Job mount it.
pub const CA_CONFIG_MAP: &str = "privatize-ca";
/// Its one key: every certificate, concatenated.
pub const CA_KEY: &str = "ca.pem";
/// Where serve and the copy Jobs mount it (read-only).
pub const CA_DIR: &str = "/etc/privatize/ca";
/// The name of that volume in serve's pod and in the Jobs.
pub const CA_VOLUME: &str = "privatize-ca";

/// The ConfigMap with the copy-Job pod template (`install --copy-job-pod-template`).
pub const TEMPLATE_CONFIG_MAP: &str = "privatize-copy-job-template";
/// Its one key: the template file as given.
pub const TEMPLATE_KEY: &str = "pod-template.yaml";
/// Where serve mounts it (read-only), and the name of that volume.
pub const TEMPLATE_DIR: &str = "/etc/privatize/copy-job-template";
pub const TEMPLATE_VOLUME: &str = "copy-job-template";

/// The CA file inside the mount: PRIVATIZE_CA_FILE of serve's Deployment and of the Jobs.
pub fn ca_file() -> String {
    format!("{CA_DIR}/{CA_KEY}")
}

/// The certificates of one PEM text, as DER; an error when it holds none.
pub fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .context("invalid PEM")?;
    if certificates.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(certificates)
}

/// The ConfigMap's bundle from the CA files' texts (`(name, text)`): each
/// file checked to hold certificates, then concatenated, each ending in a newline.
pub fn ca_bundle(files: &[(String, Vec<u8>)]) -> Result<String> {
    let mut bundle = String::new();
    for (name, pem) in files {
        certificates(pem).with_context(|| format!("reading CA file {name}"))?;
        let text = std::str::from_utf8(pem)
            .with_context(|| format!("reading CA file {name}: not UTF-8 text"))?;
        bundle.push_str(text);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
    }
    Ok(bundle)
}

/// How many of `own`'s certificates are missing from `bundle` (both PEM).
pub fn missing_from(own: &[u8], bundle: &[u8]) -> Result<usize> {
    let own = certificates(own)?;
    let held = certificates(bundle).unwrap_or_default();
    Ok(own.iter().filter(|c| !held.contains(c)).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca() -> String {
        crate::tls::issue(&["x".into()]).unwrap().ca_pem
    }

    #[test]
    fn the_bundle_is_every_file_in_order_each_ending_in_a_newline() {
        let (a, b) = (ca(), ca());
        let files = vec![
            ("a.pem".to_string(), a.trim_end().as_bytes().to_vec()),
            ("b.pem".to_string(), b.as_bytes().to_vec()),
        ];
        let bundle = ca_bundle(&files).unwrap();
        assert_eq!(bundle, format!("{}\n{b}", a.trim_end()));
        assert_eq!(missing_from(a.as_bytes(), bundle.as_bytes()).unwrap(), 0);
        assert_eq!(missing_from(b.as_bytes(), bundle.as_bytes()).unwrap(), 0);
        assert_eq!(missing_from(ca().as_bytes(), bundle.as_bytes()).unwrap(), 1);
        assert_eq!(missing_from(a.as_bytes(), b"").unwrap(), 1);
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let files = vec![("empty.pem".to_string(), b"hello\n".to_vec())];
        assert_eq!(
            format!("{:#}", ca_bundle(&files).unwrap_err()),
            "reading CA file empty.pem: no PEM certificate in it"
        );
    }
}
