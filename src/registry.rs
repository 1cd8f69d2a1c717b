//! Edge: OCI registries through oci-client. Builds the client (OS trust
//! store plus extra CAs, plain HTTP only for named hosts, every plain-HTTP
//! request of oci-client through the transport guard), logs in (every login
//! done by `registry/token.rs`, so oci-client holds no credential), and reads
//! manifests. The copy itself lives in `registry/copy.rs`.

pub mod auth;
pub mod challenge;
pub mod copy;
pub mod guard;
pub mod observe;
pub mod oci;
pub mod plain_http;
pub mod realm;
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
use guard::Guard;
use oci::{Hygiene, Oci};
use plain_http::PlainHttp;
use realm::Realms;
use token::{Credentials, Logins};

/// How the client reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// PEM files of extra CA certificates, trusted beside the OS store.
    pub ca_files: Vec<PathBuf>,
    /// Hosts (`HOST[:PORT]`) spoken to over plain HTTP; every other URL
    /// (token realms and redirects included) must be https.
    pub plain_http: Vec<String>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = concat!("privatize/", env!("CARGO_PKG_VERSION"));

/// The registry client a run shares: oci-client behind its transport guard,
/// plus the logins it does not do itself. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    oci: Oci,
    logins: Logins,
    /// Hosts logged in so far.
    logged_in: Arc<Mutex<HashSet<String>>>,
    /// Lives as long as the client.
    _guard: Arc<Guard>,
}

impl Client {
    /// The oci-client underneath (its errors cleaned of remote text).
    pub fn oci(&self) -> &Oci {
        &self.oci
    }

    /// Makes sure the next request for `image` with `op` carries the login
    /// its host asks for (a Basic pair or a scoped token).
    pub async fn authorize(&self, image: &ImageRef, op: RegistryOperation) -> Result<()> {
        self.logins
            .authorize(self.oci.raw(), &image.to_oci(), op)
            .await
    }
}

/// Builds the one client a run uses (needs a tokio runtime: the transport
/// guard runs on it). Blob pushes are monolithic streamed PUTs (ECR
/// mishandles chunked uploads; it is also one round trip fewer).
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
        .filter(|h| !h.is_empty())
        .collect();
    let rule = PlainHttp::new(&plain_http);
    let guard = Guard::start(rule.clone(), CONNECT_TIMEOUT, READ_TIMEOUT)?;
    let protocol = if plain_http.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(plain_http.clone())
    };
    // Any proxy setting turns off reqwest's reading of HTTP(S)_PROXY and
    // NO_PROXY: the guard applies them itself. NO_PROXY stays off here, as
    // oci-client would apply it to the guard too.
    let https_proxy = guard::environment_has_https_proxy().then(|| guard.url());
    let config = ClientConfig {
        protocol,
        extra_root_certificates,
        use_monolithic_push: true,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        platform_resolver: None,
        user_agent: USER_AGENT,
        http_proxy: Some(guard.url()),
        https_proxy,
        no_proxy: None,
        ..Default::default()
    };
    let oci = oci_client::Client::try_from(config).context("building the registry client")?;
    let http = reqwest::Client::builder()
        .tls_certs_merge(exchange_roots)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .redirect(rule.redirect_policy())
        .build()
        .context("building the registry client")?;
    let hygiene = Hygiene {
        marker: guard.marker().to_string(),
        rule: rule.clone(),
    };
    Ok(Client {
        oci: Oci::new(oci, hygiene),
        logins: Logins::new(Realms::new(http, rule, plain_http)),
        logged_in: Arc::default(),
        _guard: Arc::new(guard),
    })
}

/// Remembers the credentials for a registry host (the first login of a host
/// wins). privatize logs in itself: oci-client only ever holds "anonymous",
/// so it never sends a credential anywhere on its own.
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
    let credentials = match (identity_token(&auth).map(str::to_string), auth) {
        (Some(token), _) => Credentials::Identity(token),
        (None, RegistryAuth::Basic(user, password)) => Credentials::Basic { user, password },
        (None, RegistryAuth::Bearer(token)) => Credentials::Token(token),
        (None, RegistryAuth::Anonymous) => Credentials::Anonymous,
    };
    client.logins.insert(host, credentials);
    client
        .oci
        .raw()
        .store_auth_if_needed(host, &RegistryAuth::Anonymous)
        .await;
}

/// The digest a reference resolves to, or `None` when the registry has no such manifest.
pub async fn manifest_digest(client: &Client, image: &ImageRef) -> Result<Option<String>> {
    client
        .authorize(image, RegistryOperation::Pull)
        .await
        .with_context(|| format!("resolving {image}"))?;
    match client.oci.fetch_manifest_digest(&image.to_oci()).await {
        Ok(digest) => Ok(Some(digest)),
        Err(err) if is_not_found(&err) => Ok(None),
        Err(err) => Err(anyhow::Error::new(err).context(format!("resolving {image}"))),
    }
}

/// The manifest's exact bytes and digest (verified against a pinned digest).
pub async fn pull_manifest(client: &Client, image: &ImageRef) -> Result<(Bytes, String)> {
    client
        .authorize(image, RegistryOperation::Pull)
        .await
        .with_context(|| format!("pulling manifest {image}"))?;
    client
        .oci
        .pull_manifest_raw(&image.to_oci(), &ACCEPTED)
        .await
        .with_context(|| format!("pulling manifest {image}"))
}

/// Whether an answer says the manifest (or repository) is not there.
pub(crate) fn is_not_found(err: &OciDistributionError) -> bool {
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
