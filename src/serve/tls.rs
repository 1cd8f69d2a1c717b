//! TLS of the admission port: a rustls acceptor (TLS 1.2+, ALPN h2 and
//! http/1.1) whose certificate comes from a resolver that a watcher swaps when
//! the certificate files change. A bad new pair keeps the old one; a new pair
//! the webhooks' caBundle does not trust yet waits for it (`trust.rs`), and a
//! replica is not ready while the certificate it presents is not trusted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::Metrics;
use super::trust::Trust;
use crate::cli::TlsArgs;
use crate::tls::CertInfo;

/// Where the serving certificate comes from.
#[derive(Clone)]
pub enum CertSource {
    /// PEM text from the environment (`SERVER_TLS_CERT` / `SERVER_TLS_KEY`); never changes.
    Pem { cert: String, key: String },
    /// PEM files, re-read when their content changes (a rotated Secret volume).
    Files { cert: PathBuf, key: PathBuf },
}

impl std::fmt::Debug for CertSource {
    // The key is secret: show where it comes from, never what it is.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertSource::Pem { .. } => f.write_str("CertSource::Pem"),
            CertSource::Files { cert, key } => f
                .debug_struct("CertSource::Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

impl CertSource {
    /// PEM text wins over the paths; half a PEM pair is an error.
    pub fn from_args(args: &TlsArgs) -> Result<Self> {
        match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Ok(CertSource::Pem {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(_), None) => bail!("SERVER_TLS_CERT is set but SERVER_TLS_KEY is not: set both PEM texts, or neither to use the files"),
            (None, Some(_)) => bail!("SERVER_TLS_KEY is set but SERVER_TLS_CERT is not: set both PEM texts, or neither to use the files"),
            (None, None) => Ok(CertSource::Files {
                cert: args.tls_cert_path.clone(),
                key: args.tls_key_path.clone(),
            }),
        }
    }
}

/// Hands rustls the current certificate; [`CertWatcher`] swaps it.
#[derive(Debug, Default)]
pub struct ReloadingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The webhooks' caBundle does not trust (or has not been seen to
    /// trust) the certificate presented (part of readiness).
    untrusted: AtomicBool,
}

/// How long a certificate the webhooks' caBundle does not trust waits for
/// it: a rotation updates the bundle within seconds; past this the new
/// certificate is served anyway (whoever manages the bundle may not verify
/// against it), with a warning.
pub const TRUST_WAIT: Duration = Duration::from_secs(120);

impl ReloadingResolver {
    /// Whether a certificate is loaded (part of readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    /// Whether the certificate presented is trusted, as far as serve can tell.
    pub fn is_trusted(&self) -> bool {
        !self.untrusted.load(Ordering::SeqCst)
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(key);
        }
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

/// A TLS 1.2+ acceptor offering h2 and http/1.1, with the resolver's
/// certificate; with `client_ca`, only for callers presenting a client
/// certificate it signed.
pub fn acceptor(
    resolver: Arc<ReloadingResolver>,
    client_ca: Option<&std::path::Path>,
) -> Result<TlsAcceptor> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("configuring TLS 1.2 and 1.3")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Verifies callers' certificates against the CAs in `path` (PEM).
fn client_verifier(
    path: &std::path::Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let what = || format!("reading the client CA file {}", path.display());
    let pem = std::fs::read(path).with_context(what)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.with_context(what)?)
            .with_context(|| format!("adding a CA of {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("no certificate in the client CA file {}", path.display());
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .with_context(|| format!("building a client verifier from {}", path.display()))
}

/// A certificate and key that belong together, ready for rustls, and its expiry.
fn parse_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<(Arc<CertifiedKey>, CertInfo)> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate PEM")?;
    if chain.is_empty() {
        bail!("no certificate in the certificate PEM");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("reading the key PEM")?;
    let certified = CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
        .context("loading the key (does it belong to the certificate?)")?;
    let info = crate::tls::inspect(cert_pem)?;
    if info.not_after <= SystemTime::now() {
        bail!(
            "the certificate expired at {}",
            humantime::format_rfc3339_seconds(info.not_after)
        );
    }
    Ok((Arc::new(certified), info))
}

/// Loads the certificate into the resolver, and re-reads files when they change.
pub struct CertWatcher {
    source: CertSource,
    resolver: Arc<ReloadingResolver>,
    metrics: Arc<Metrics>,
    /// The bytes last looked at (loaded or refused), so a bad pair warns once.
    seen: Option<(Vec<u8>, Vec<u8>)>,
    last_read_error: Option<String>,
    info: Option<CertInfo>,
    /// Reads the webhooks' caBundle (in a cluster).
    trust: Option<Trust>,
    /// Since when a new pair has waited for the caBundle to trust it.
    waiting_since: Option<Instant>,
    /// Since when the pair presented has not been seen trusted (None: it has).
    unconfirmed_since: Option<Instant>,
}

impl CertWatcher {
    pub fn new(source: CertSource, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            resolver: Arc::new(ReloadingResolver::default()),
            metrics,
            seen: None,
            last_read_error: None,
            info: None,
            trust: None,
            waiting_since: None,
            unconfirmed_since: None,
        }
    }

    /// Checks every certificate against the webhooks' caBundle before it is
    /// presented (and the one loaded, before serve is ready).
    pub fn with_trust(mut self, trust: Trust) -> Self {
        self.trust = Some(trust);
        self.unconfirmed_since = Some(Instant::now());
        self.resolver.untrusted.store(true, Ordering::SeqCst);
        self
    }

    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        self.resolver.clone()
    }

    /// First load. PEM text from the environment must be good (it cannot
    /// change later); missing or bad files only leave the server not ready
    /// until good ones appear.
    pub async fn load(&mut self) -> Result<()> {
        if let CertSource::Pem { cert, key } = &self.source {
            let (certified, cert_info) = parse_pair(cert.as_bytes(), key.as_bytes())
                .context("loading the serving certificate from SERVER_TLS_CERT / SERVER_TLS_KEY")?;
            self.resolver.set(certified);
            info!(
                not_after = %humantime::format_rfc3339_seconds(cert_info.not_after),
                "serving certificate loaded from the environment"
            );
            self.info = Some(cert_info);
        } else {
            self.poll().await;
        }
        self.export_expiry();
        Ok(())
    }

    /// Polls the files every `interval` until `shutdown`.
    pub async fn run(mut self, interval: Duration, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.poll().await;
            self.confirm_trust().await;
            self.export_expiry();
        }
    }

    /// Readiness: whether the caBundle trusts the certificate presented
    /// (checked until it does, or for TRUST_WAIT).
    async fn confirm_trust(&mut self) {
        let (Some(trust), Some(since)) = (&self.trust, self.unconfirmed_since) else {
            return;
        };
        let Some(current) = self.resolver.current() else {
            return;
        };
        let trusted = trust.trusts(&current.cert).await != Some(false);
        if trusted || since.elapsed() >= TRUST_WAIT {
            if !trusted {
                warn!(
                    wait_s = TRUST_WAIT.as_secs(),
                    "the webhooks' caBundle does not trust the serving certificate; ready anyway"
                );
            }
            self.unconfirmed_since = None;
            self.resolver.untrusted.store(false, Ordering::SeqCst);
        }
    }

    /// Whether a new pair may be presented now: the caBundle trusts it, or
    /// there is nothing to ask, or it has waited TRUST_WAIT.
    async fn may_present(&mut self, certified: &CertifiedKey) -> bool {
        let Some(trust) = &self.trust else {
            return true;
        };
        if trust.trusts(&certified.cert).await != Some(false) {
            self.waiting_since = None;
            return true;
        }
        let since = *self.waiting_since.get_or_insert_with(|| {
            info!("the new serving certificate waits until the webhooks' caBundle trusts its CA");
            Instant::now()
        });
        if since.elapsed() < TRUST_WAIT {
            return false;
        }
        warn!(wait_s = TRUST_WAIT.as_secs(), "the webhooks' caBundle still does not trust the new serving certificate: presenting it anyway");
        self.waiting_since = None;
        true
    }

    fn export_expiry(&self) {
        if let Some(info) = &self.info {
            self.metrics
                .set_certificate_expiry(crate::tls::seconds_left(info, SystemTime::now()));
        }
    }

    async fn poll(&mut self) {
        let CertSource::Files { cert, key } = &self.source else {
            return;
        };
        // Read content, not inotify: a Secret volume swaps a `..data` symlink.
        let read = async {
            let cert_pem = tokio::fs::read(cert)
                .await
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = tokio::fs::read(key)
                .await
                .with_context(|| format!("reading {}", key.display()))?;
            anyhow::Ok((cert_pem, key_pem))
        };
        let pair = match read.await {
            Ok(pair) => pair,
            Err(err) => {
                let message = format!("{err:#}");
                if self.last_read_error.as_ref() != Some(&message) {
                    warn!(error = %message, loaded = self.resolver.is_loaded(), "cannot read the serving certificate files; keeping what is loaded");
                    self.last_read_error = Some(message);
                }
                return;
            }
        };
        self.last_read_error = None;
        if self.seen.as_ref() == Some(&pair) {
            return;
        }
        let (cert_display, key_display) = (cert.display().to_string(), key.display().to_string());
        match parse_pair(&pair.0, &pair.1) {
            Ok((certified, cert_info)) => {
                let first = !self.resolver.is_loaded();
                // Not marked seen while it waits: looked at again next time.
                if !first && !self.may_present(&certified).await {
                    return;
                }
                let not_after = cert_info.not_after;
                self.resolver.set(certified);
                self.info = Some(cert_info);
                self.metrics.certificate_reload("loaded");
                info!(
                    cert = %cert_display,
                    not_after = %humantime::format_rfc3339_seconds(not_after),
                    "{}",
                    if first { "serving certificate loaded" } else { "serving certificate reloaded" }
                );
            }
            Err(err) => {
                self.metrics.certificate_reload("rejected");
                warn!(
                    cert = %cert_display,
                    key = %key_display,
                    error = %format!("{err:#}"),
                    loaded = self.resolver.is_loaded(),
                    "refusing the new certificate files; keeping what is loaded"
                );
            }
        }
        self.seen = Some(pair);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let a = crate::tls::issue(&["localhost".to_string()]).unwrap();
        let b = crate::tls::issue(&["localhost".to_string()]).unwrap();
        let err = parse_pair(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("does it belong"), "{err:#}");
        parse_pair(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
    }

    #[test]
    fn half_a_pem_pair_is_an_error() {
        let args = TlsArgs {
            tls_cert_path: "c".into(),
            tls_key_path: "k".into(),
            tls_cert: Some("x".into()),
            tls_key: None,
            client_ca_file: None,
        };
        let err = CertSource::from_args(&args).unwrap_err().to_string();
        assert!(err.contains("SERVER_TLS_KEY is not"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let source = CertSource::Pem {
            cert: "CERT".into(),
            key: "SECRET-KEY".into(),
        };
        assert!(!format!("{source:?}").contains("SECRET"));
    }
}
