//! Edge: OCI registries through oci-client. Builds the client (OS trust
//! store plus extra CAs, plain HTTP only for named hosts), logs in (identity
//! tokens through `registry/token.rs`), and reads manifests. The copy itself
//! lives in `registry/copy.rs`.

pub mod auth;
pub mod copy;
pub mod observe;
pub mod retry;
pub mod token;
pub mod verify;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::image::ImageRef;
use crate::manifest::ACCEPTED;
use auth::identity_token;
use token::IdentityTokens;

/// How the client reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// PEM files of extra CA certificates, trusted beside the OS store.
    pub ca_files: Vec<PathBuf>,
    /// Hosts (`HOST[:PORT]`) spoken to over plain HTTP.
    pub plain_http: Vec<String>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("privatize/", env!("CARGO_PKG_VERSION"));

/// The registry client a run shares: oci-client, plus the identity-token
/// exchange it cannot do itself. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    oci: oci_client::Client,
    identity: IdentityTokens,
    /// Hosts logged in so far.
    logged_in: Arc<Mutex<HashSet<String>>>,
}

impl Client {
    /// The oci-client underneath.
    pub fn oci(&self) -> &oci_client::Client {
        &self.oci
    }

    /// Makes sure a request for `image` with `op` carries an access token
    /// when its host logs in with an identity token.
    pub async fn authorize(&self, image: &ImageRef, op: RegistryOperation) -> Result<()> {
        self.identity
            .authorize(&self.oci, &image.to_oci(), op)
            .await
    }
}

/// Builds the one client a run uses. Blob pushes are monolithic streamed
/// PUTs (ECR mishandles chunked uploads; it is also one round trip fewer).
pub fn client(transport: &Transport) -> Result<Client> {
    let mut extra_root_certificates = Vec::new();
    let mut exchange_roots = Vec::new();
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
        exchange_roots.extend(
            reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("reading CA file {}: invalid PEM", path.display()))?,
        );
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: pem,
        });
    }
    let plain_http: Vec<String> = transport
        .plain_http
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let protocol = if plain_http.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(plain_http.clone())
    };
    let config = ClientConfig {
        protocol,
        extra_root_certificates,
        use_monolithic_push: true,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        platform_resolver: None,
        user_agent: USER_AGENT,
        ..Default::default()
    };
    let oci = oci_client::Client::try_from(config).context("building the registry client")?;
    let http = reqwest::Client::builder()
        .tls_certs_merge(exchange_roots)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
        .context("building the registry client")?;
    Ok(Client {
        oci,
        identity: IdentityTokens::new(http, plain_http),
        logged_in: Arc::default(),
    })
}

/// Remembers the credentials for a registry host (the first login of a host wins).
/// An identity token is kept for the exchange; oci-client never sees it.
pub async fn login(client: &Client, image: &ImageRef, auth: RegistryAuth) {
    let oci = image.to_oci();
    let host = oci.resolve_registry();
    if !client
        .logged_in
        .lock()
        .expect("login lock")
        .insert(host.to_string())
    {
        return;
    }
    match identity_token(&auth) {
        Some(token) => {
            client.identity.insert(host, token).await;
            client
                .oci
                .store_auth_if_needed(host, &RegistryAuth::Anonymous)
                .await;
        }
        None => client.oci.store_auth_if_needed(host, &auth).await,
    }
}

/// The digest a reference resolves to, or `None` when the registry has no such manifest.
pub async fn manifest_digest(client: &Client, image: &ImageRef) -> Result<Option<String>> {
    client.authorize(image, RegistryOperation::Pull).await?;
    let oci = image.to_oci();
    match client
        .oci
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
    client.authorize(image, RegistryOperation::Pull).await?;
    client
        .oci
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
