//! Is an image in the target registry? A manifest HEAD with a time limit,
//! behind a short single-flight cache. The gate asks with `fresh` (no cache).

use std::sync::Arc;
use std::time::Duration;

use crate::registry::Client;
use anyhow::Result;
use oci_client::secrets::RegistryAuth;
use tokio::sync::Mutex;

use super::flights::Flights;
use crate::ecr::tokens::TokenCache;
use crate::image::ImageRef;
use crate::manifest::index_platforms;
use crate::mutate::pods::Presence;
use crate::registry::{self, Transport};

/// How long answers are kept.
#[derive(Debug, Clone, Copy)]
pub struct CacheTimes {
    /// A present image (a pruned repository is noticed after this).
    pub present: Duration,
    /// A missing image (short: the copy may land any moment).
    pub missing: Duration,
    /// Time limit of one HEAD; past it the answer is `Unknown`.
    pub timeout: Duration,
}

/// How long what an index says is kept (it cannot change: only bounds memory).
const INDEX_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a mirrored index says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFacts {
    /// `os/arch[/variant]` of its images.
    pub platforms: Vec<String>,
    /// The source index it was filtered from (`--platforms`), if it was.
    pub filtered_from: Option<String>,
}

/// How privatize logs in to the target.
pub enum TargetAuth {
    /// ECR: a login from the token cache the Secret webhook shares (renewed there).
    Ecr {
        region: String,
        tokens: Arc<TokenCache>,
    },
    /// Any registry: fixed credentials (or anonymous).
    Fixed(RegistryAuth),
}

/// A logged-in registry client, rebuilt when the login changes (oci-client
/// keeps the first credentials it is given per host).
struct Login {
    client: Client,
    auth: RegistryAuth,
}

/// Presence checks against the target registry.
pub struct Checker {
    transport: Transport,
    auth: TargetAuth,
    login: Mutex<Option<Login>>,
    /// Presence, and the digest when present.
    cache: Flights<(Presence, Option<String>)>,
    /// What an index in the target says of itself, by `repository@digest`
    /// (content-addressed: it never changes).
    indexes: Flights<Option<IndexFacts>>,
    times: CacheTimes,
}

impl Checker {
    pub fn new(transport: Transport, auth: TargetAuth, times: CacheTimes) -> Self {
        Self {
            transport,
            auth,
            login: Mutex::new(None),
            cache: Flights::default(),
            indexes: Flights::default(),
            times,
        }
    }

    /// Cached presence of `target`; the flag says whether the answer was shared.
    pub async fn check(self: &Arc<Self>, target: &ImageRef) -> (Presence, bool) {
        let (presence, _, hit) = self.check_digest(target).await;
        (presence, hit)
    }

    /// Cached presence of `target` and, when present, the digest it points at.
    pub async fn check_digest(
        self: &Arc<Self>,
        target: &ImageRef,
    ) -> (Presence, Option<String>, bool) {
        let this = self.clone();
        let image = target.clone();
        let ((presence, digest), hit) = self
            .cache
            .get(&target.to_string(), move || async move {
                let (presence, digest) = this.head(&image).await;
                let keep = match presence {
                    Presence::Present => this.times.present,
                    Presence::Missing => this.times.missing,
                    Presence::Unknown => Duration::ZERO,
                };
                ((presence, digest), keep)
            })
            .await;
        (presence, digest, hit)
    }

    /// Presence asked of the registry now, bypassing (and refreshing) the cache.
    pub async fn fresh(self: &Arc<Self>, target: &ImageRef) -> Presence {
        self.cache.forget(&target.to_string());
        self.check(target).await.0
    }

    /// What the index `digest` of `target`'s repository says of itself
    /// (platforms, and what it was filtered from); None for a single image
    /// or when it cannot be read now (not cached then).
    pub async fn index_facts(
        self: &Arc<Self>,
        target: &ImageRef,
        digest: &str,
    ) -> Option<IndexFacts> {
        let this = self.clone();
        let image = target.at_digest(digest);
        let (facts, _) = self
            .indexes
            .get(&image.to_string(), move || async move {
                let attempt = async {
                    let client = this.client(&image).await?;
                    registry::pull_manifest(&client, &image).await
                };
                match tokio::time::timeout(this.times.timeout, attempt).await {
                    Ok(Ok((bytes, _))) => {
                        let facts = index_platforms(&bytes).map(|(platforms, filtered_from)| IndexFacts {
                            platforms,
                            filtered_from,
                        });
                        (facts, INDEX_TTL)
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(image = %image, error = %format!("{err:#}"), "reading a mirrored index failed");
                        (None, Duration::ZERO)
                    }
                    Err(_) => (None, Duration::ZERO),
                }
            })
            .await;
        facts
    }

    async fn head(&self, target: &ImageRef) -> (Presence, Option<String>) {
        // By digest when pinned: that is what the pod pulls.
        let probe = match &target.digest {
            Some(digest) => target.at_digest(digest),
            None => target.clone(),
        };
        let attempt = async {
            let client = self.client(target).await?;
            registry::manifest_digest(&client, &probe).await
        };
        match tokio::time::timeout(self.times.timeout, attempt).await {
            Ok(Ok(Some(digest))) => (Presence::Present, Some(digest)),
            Ok(Ok(None)) => (Presence::Missing, None),
            Ok(Err(err)) => {
                tracing::warn!(image = %target, error = %format!("{err:#}"), "presence check failed");
                (Presence::Unknown, None)
            }
            Err(_) => {
                tracing::warn!(image = %target, timeout_ms = self.times.timeout.as_millis() as u64, "presence check timed out");
                (Presence::Unknown, None)
            }
        }
    }

    async fn client(&self, target: &ImageRef) -> Result<Client> {
        let auth = match &self.auth {
            TargetAuth::Fixed(auth) => auth.clone(),
            TargetAuth::Ecr { region, tokens } => {
                let token = tokens.token(region).await?;
                RegistryAuth::Basic(token.username, token.password)
            }
        };
        let mut login = self.login.lock().await;
        if let Some(current) = login.as_ref().filter(|l| l.auth == auth) {
            return Ok(current.client.clone());
        }
        let client = registry::client(&self.transport)?;
        registry::login(&client, target, auth.clone()).await;
        *login = Some(Login {
            client: client.clone(),
            auth,
        });
        Ok(client)
    }
}
