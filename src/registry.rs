//! Edge: OCI registries through oci-client. Builds the client (OS trust
//! store plus extra CAs, plain HTTP only for named hosts), logs in, and reads
//! manifests. The copy itself lives in `registry/copy.rs`.

pub mod auth;
pub mod copy;
pub mod observe;
pub mod retry;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::image::ImageRef;
use crate::manifest::ACCEPTED;

/// How the client reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// PEM files of extra CA certificates, trusted beside the OS store.
    pub ca_files: Vec<PathBuf>,
    /// Hosts (`HOST[:PORT]`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
}

/// Builds the one client a run uses. Blob pushes are monolithic streamed
/// PUTs (ECR mishandles chunked uploads; it is also one round trip fewer).
pub fn client(transport: &Transport) -> Result<Client> {
    let mut extra_root_certificates = Vec::new();
    for path in &transport.ca_files {
        let pem =
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading CA file {}: invalid PEM", path.display()))?;
        if certificates.is_empty() {
            anyhow::bail!(
                "reading CA file {}: no PEM certificate in it",
                path.display()
            );
        }
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem,
        });
    }
    let protocol = if transport.plain_http.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(
            transport
                .plain_http
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        )
    };
    let config = ClientConfig {
        protocol,
        extra_root_certificates,
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        platform_resolver: None,
        user_agent: concat!("privatize/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    Client::try_from(config).context("building the registry client")
}

/// Remembers the credentials for a registry host (once per host).
pub async fn login(client: &Client, image: &ImageRef, auth: RegistryAuth) {
    let oci = image.to_oci();
    client
        .store_auth_if_needed(oci.resolve_registry(), &auth)
        .await;
}

/// The digest a reference resolves to, or `None` when the registry has no such manifest.
pub async fn manifest_digest(client: &Client, image: &ImageRef) -> Result<Option<String>> {
    let oci = image.to_oci();
    match client
        .fetch_manifest_digest(&oci, &RegistryAuth::Anonymous)
        .await
    {
        Ok(digest) => Ok(Some(digest)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(anyhow::Error::new(err).context(format!("resolving {image}"))),
    }
}

/// The manifest's exact bytes and digest (verified against a pinned digest).
pub async fn pull_manifest(client: &Client, image: &ImageRef) -> Result<(Bytes, String)> {
    client
        .pull_manifest_raw(&image.to_oci(), &RegistryAuth::Anonymous, &ACCEPTED)
        .await
        .with_context(|| format!("pulling manifest {image}"))
}

fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NameUnknown
            )
        }),
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        _ => false,
    }
}
