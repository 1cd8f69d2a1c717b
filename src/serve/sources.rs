//! Can a source be read with no credentials? A manifest HEAD through the
//! anonymous token flow, with a time limit, behind a single-flight cache.
//! An image anonymous clients cannot read is mirrored only for namespaces
//! allowed private sources (DESIGN §11): the installation's source
//! credentials would otherwise copy one team's private image into a registry
//! every namespace pulls from.

use std::sync::Arc;
use std::time::Duration;

use super::flights::Flights;
use super::metrics::Metrics;
use crate::image::ImageRef;
use crate::mutate::pods::Access;
use crate::registry::retry::{classify, Verdict};
use crate::registry::{self, Transport};

/// Anonymous-access checks of sources.
pub struct Sources {
    client: registry::Client,
    cache: Flights<Access>,
    /// How long an answer is kept (public and private alike).
    keep: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Sources {
    /// `client` must hold no credentials: it is the anonymous client.
    pub fn new(
        transport: &Transport,
        keep: Duration,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client: registry::client(transport)?,
            cache: Flights::default(),
            keep,
            timeout,
            metrics,
        })
    }

    /// Whether `source` can be read anonymously (cached).
    pub async fn access(self: &Arc<Self>, source: &ImageRef) -> Access {
        let this = self.clone();
        let image = source.clone();
        let (access, hit) = self
            .cache
            .get(&source.to_string(), move || async move {
                let access = this.head(&image).await;
                let keep = match access {
                    Access::Unknown => Duration::ZERO,
                    _ => this.keep,
                };
                (access, keep)
            })
            .await;
        let label = match access {
            Access::Public => "public",
            Access::Private => "private",
            Access::Unknown => "unknown",
        };
        self.metrics.source_check(label, hit);
        access
    }

    /// The digest `source` (a tag) points at now, read anonymously, uncached
    /// and with no time limit of its own (the caller's).
    pub async fn digest(&self, source: &ImageRef) -> anyhow::Result<Option<String>> {
        registry::manifest_digest(&self.client, source).await
    }

    async fn head(&self, source: &ImageRef) -> Access {
        // By digest when pinned: that is what would be copied.
        let probe = match &source.digest {
            Some(digest) => source.at_digest(digest),
            None => source.clone(),
        };
        let attempt = registry::manifest_digest(&self.client, &probe);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(Some(_))) => Access::Public,
            // Registries answer a private repository "not found" to strangers.
            Ok(Ok(None)) => Access::Private,
            Ok(Err(err)) => match classify(&err) {
                Verdict::Fatal => {
                    tracing::debug!(image = %source, error = %format!("{err:#}"), "source not readable anonymously");
                    Access::Private
                }
                _ => {
                    tracing::warn!(image = %source, error = %format!("{err:#}"), "anonymous access check failed");
                    Access::Unknown
                }
            },
            Err(_) => {
                tracing::warn!(image = %source, timeout_ms = self.timeout.as_millis() as u64, "anonymous access check timed out");
                Access::Unknown
            }
        }
    }
}
