//! Referrers follow the image: for every manifest of a copy, the artifacts
//! that refer to it (signatures, attestations, SBOMs: OCI 1.1 referrers with
//! a `subject`, and cosign's `sha256-<hex>.sig|.att|.sbom` tags) are copied
//! too, by digest and as their exact bytes, and then theirs (a signature of
//! an SBOM), a few levels deep. The source is asked through its Referrers
//! API, or its referrers tag schema when it has none (oci-client falls back
//! on a 404). On the target a referrer must be found the same two ways: when
//! the target's listing of the subject lacks it after the push (no Referrers
//! API), the tag schema's index `sha256-<hex>` gets it added. cosign's tags
//! are pushed as tags. What cannot be copied is reported, one line each; the
//! caller decides whether that fails the copy (`--require-referrers`).

use std::collections::HashSet;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use oci_client::errors::OciDistributionError;
use oci_client::RegistryOperation;
use serde_json::Value;

use super::super::observe::Unobserved;
use super::super::retry::with_retries;
use super::super::{is_not_found, pull_manifest};
use super::Copier;
use crate::image::ImageRef;
use crate::manifest::referrers::{cosign_tags, fallback_tag, merged_index, referrer};
use crate::manifest::{Manifest, OCI_INDEX};

/// How many levels of referrers of referrers are followed.
pub const MAX_DEPTH: usize = 4;
/// How many referrers one image brings along at most.
pub const MAX_REFERRERS: usize = 256;

/// What following an image's referrers did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referrers {
    /// Referrer manifests now in the target (copied, or found in place), by digest.
    pub copied: Vec<String>,
    /// Target tags pushed: cosign's, and referrers tag schema indexes.
    pub tags: Vec<String>,
    /// What could not be copied or listed, one line each.
    pub skipped: Vec<String>,
}

/// What the source holds for one subject.
struct Found {
    /// Digests its referrers listing names.
    listed: Vec<String>,
    /// cosign's tags of the subject that exist, with the digest each points at.
    cosign: Vec<(String, String)>,
}

impl Copier {
    /// Copies the referrers of `subjects` (manifests already in `target`)
    /// from `source` to `target` (see the file header). `anchored` is the
    /// digest whose `sha256-<hex>` tag anchors the image itself (DESIGN
    /// §11): that tag is never turned into a referrers index.
    pub async fn copy_referrers(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        subjects: &[String],
        anchored: Option<&str>,
    ) -> Referrers {
        let mut report = Referrers::default();
        let mut seen: HashSet<String> = subjects.iter().cloned().collect();
        let mut level: Vec<String> = subjects.to_vec();
        for depth in 0..MAX_DEPTH {
            if level.is_empty() {
                break;
            }
            let found: Vec<(String, Result<Found>)> = stream::iter(level)
                .map(|subject| async move {
                    let found = self.discover(source, &subject).await;
                    (subject, found)
                })
                .buffered(self.options.jobs)
                .collect()
                .await;
            let mut next = Vec::new();
            let mut work = Vec::new();
            for (subject, found) in found {
                match found {
                    Ok(found) => work.push((subject, found)),
                    Err(err) => report.skipped.push(format!(
                        "listing the referrers of {subject} in {}: {err:#}",
                        source.name()
                    )),
                }
            }
            // The listed referrers, copied a few at a time, in listing order.
            let mut wanted = Vec::new();
            for (subject, found) in &work {
                for digest in &found.listed {
                    if !seen.insert(digest.clone()) {
                        continue;
                    }
                    if report.copied.len() + wanted.len() >= MAX_REFERRERS {
                        report.skipped.push(format!("{digest} (referrer of {subject}): more than {MAX_REFERRERS} referrers, the rest are not copied"));
                        continue;
                    }
                    wanted.push((subject.clone(), digest.clone()));
                }
            }
            let copied: Vec<_> = stream::iter(wanted)
                .map(|(subject, digest)| async move {
                    let copied = self.copy_one(source, target, &digest, Some(&subject)).await;
                    (subject, digest, copied)
                })
                .buffered(self.options.jobs)
                .collect()
                .await;
            let mut entries: Vec<(String, Vec<Value>)> = Vec::new();
            for (subject, digest, copied) in copied {
                match copied {
                    Ok(Some(entry)) => {
                        match entries.iter_mut().find(|(s, _)| *s == subject) {
                            Some((_, list)) => list.push(entry),
                            None => entries.push((subject, vec![entry])),
                        }
                        report.copied.push(digest.clone());
                        next.push(digest);
                    }
                    Ok(None) => {}
                    Err(err) => report
                        .skipped
                        .push(format!("copying {digest} (referrer of {subject}): {err:#}")),
                }
            }
            // Each subject's listing on the target.
            let listed: Vec<_> = stream::iter(entries)
                .map(|(subject, entries)| async move {
                    let listed = self
                        .list_on_target(target, &subject, &entries, anchored)
                        .await;
                    (subject, listed)
                })
                .buffered(self.options.jobs)
                .collect()
                .await;
            for (subject, listed) in listed {
                match listed {
                    Ok(Some(tag)) => report.tags.push(tag),
                    Ok(None) => {}
                    Err(err) => report.skipped.push(format!(
                        "listing the referrers of {subject} in {}: {err:#}",
                        target.name()
                    )),
                }
            }
            // cosign's tags.
            let tags: Vec<(String, String)> = work
                .into_iter()
                .flat_map(|(_, found)| found.cosign)
                .collect();
            let pushed: Vec<_> = stream::iter(tags)
                .map(|(tag, digest)| async move {
                    let pushed = self.copy_cosign_tag(source, target, &tag, &digest).await;
                    (tag, digest, pushed)
                })
                .buffered(self.options.jobs)
                .collect()
                .await;
            for (tag, digest, pushed) in pushed {
                match pushed {
                    Ok(pushed) => {
                        if pushed {
                            report.tags.push(tag);
                        }
                        if seen.insert(digest.clone()) {
                            report.copied.push(digest.clone());
                            next.push(digest);
                        }
                    }
                    Err(err) => report
                        .skipped
                        .push(format!("copying tag {tag} ({digest}): {err:#}")),
                }
            }
            if depth + 1 == MAX_DEPTH && !next.is_empty() {
                report.skipped.push(format!(
                    "referrers more than {MAX_DEPTH} levels deep are not followed ({} left)",
                    next.len()
                ));
            }
            level = next;
        }
        report
    }

    /// The source's referrers of `subject`, and its cosign tags.
    async fn discover(&self, source: &ImageRef, subject: &str) -> Result<Found> {
        let at = source.at_digest(subject);
        let listed = with_retries(self.options.retries, "listing referrers", || async {
            self.client.authorize(&at, RegistryOperation::Pull).await?;
            match self.client.oci().pull_referrers(&at.to_oci()).await {
                Ok(index) => Ok(index.manifests.into_iter().map(|m| m.digest).collect()),
                // The tag schema's tag holds no index (an anchor of the image
                // itself, say): there is no listing by tag.
                Err(OciDistributionError::SpecViolationError(_)) => Ok(Vec::new()),
                Err(err) if is_not_found(&err) => Ok(Vec::new()),
                Err(err) => Err(anyhow::Error::new(err)),
            }
        })
        .await?;
        let heads = cosign_tags(subject).into_iter().map(|tag| async move {
            let digest = self.tag_digest(&source.at_tag(&tag)).await?;
            Ok::<_, anyhow::Error>(digest.map(|d| (tag, d)))
        });
        let cosign = futures_util::future::try_join_all(heads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(Found { listed, cosign })
    }

    /// Copies one referrer named by a listing of `subject`: its manifest must
    /// name that subject (a listing is not taken on trust). `None` when it
    /// does not (then it is not copied, and logged).
    async fn copy_one(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        digest: &str,
        subject: Option<&str>,
    ) -> Result<Option<Value>> {
        let bytes = self.pull_exact(source, digest).await?;
        let found = referrer(&bytes, digest)?;
        if let Some(subject) = subject {
            if found.subject.as_deref() != Some(subject) {
                tracing::warn!(
                    image = %source.name(), subject, referrer = digest,
                    names = found.subject.as_deref().unwrap_or("none"),
                    "a listed referrer names another subject: not copied"
                );
                return Ok(None);
            }
        }
        // A manifest in place has its blobs (registries refuse it otherwise).
        if self.tag_digest(&target.at_digest(digest)).await?.is_none() {
            self.copy_bytes(source, bytes, target, &Unobserved).await?;
        }
        Ok(Some(found.entry))
    }

    /// A manifest's exact bytes, by digest (verified by oci-client).
    async fn pull_exact(&self, image: &ImageRef, digest: &str) -> Result<Bytes> {
        let at = image.at_digest(digest);
        let (bytes, _) = with_retries(self.options.retries, "pulling referrer", || {
            pull_manifest(&self.client, &at)
        })
        .await?;
        Ok(bytes)
    }

    /// Makes the target list `entries` as referrers of `subject`: nothing to
    /// do when its listing (Referrers API, or tag schema) names them all;
    /// otherwise they are added to the tag schema's index. Returns the tag
    /// pushed, if one was.
    async fn list_on_target(
        &self,
        target: &ImageRef,
        subject: &str,
        entries: &[Value],
        anchored: Option<&str>,
    ) -> Result<Option<String>> {
        let at = target.at_digest(subject);
        self.client.authorize(&at, RegistryOperation::Pull).await?;
        let listed: Vec<String> = match self.client.oci().pull_referrers(&at.to_oci()).await {
            Ok(index) => index.manifests.into_iter().map(|m| m.digest).collect(),
            Err(OciDistributionError::SpecViolationError(_)) => Vec::new(),
            Err(err) if is_not_found(&err) => Vec::new(),
            Err(err) => return Err(anyhow::Error::new(err).context("reading the target's listing")),
        };
        let missing: Vec<Value> = entries
            .iter()
            .filter(|e| {
                let digest = e.get("digest").and_then(Value::as_str).unwrap_or_default();
                !listed.iter().any(|l| l == digest)
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let tag = fallback_tag(subject);
        if anchored == Some(subject) {
            bail!(
                "the target has no Referrers API and its tag {tag} anchors the digest-pinned image itself (DESIGN §11): {} referrer(s) copied by digest but not listed",
                missing.len()
            );
        }
        let tagged = target.at_tag(&tag);
        let existing = match pull_manifest(&self.client, &tagged).await {
            Ok((bytes, _)) => Some(bytes),
            Err(err)
                if err.chain().any(|c| {
                    c.downcast_ref::<OciDistributionError>()
                        .is_some_and(is_not_found)
                }) =>
            {
                None
            }
            Err(err) => return Err(err),
        };
        let Some(index) = merged_index(existing.as_deref(), &missing)
            .with_context(|| format!("tag {tag} of {}", target.name()))?
        else {
            return Ok(None);
        };
        let index = Bytes::from(index);
        let digest = crate::manifest::sha256_digest(&index);
        self.push_manifest(&tagged, &digest, &index, OCI_INDEX)
            .await?;
        Ok(Some(tag))
    }

    /// Copies a cosign tag's manifest by digest and points the target's tag
    /// at it, unless the target's tag already holds every signature the
    /// source's does. A target tag holding signatures the source lacks (the
    /// mirror signed by its owners, say) is never replaced. Whether the tag
    /// was pushed.
    async fn copy_cosign_tag(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        tag: &str,
        digest: &str,
    ) -> Result<bool> {
        let bytes = self.pull_exact(source, digest).await?;
        let at = target.at_tag(tag);
        let holds = self.tag_digest(&at).await?;
        if holds.as_deref() == Some(digest) {
            return Ok(false);
        }
        let copied = self
            .copy_bytes(source, bytes.clone(), target, &Unobserved)
            .await?;
        if let Some(holds) = holds {
            let theirs = self.pull_exact(target, &holds).await?;
            let (ours, theirs) = (blob_digests(&bytes)?, blob_digests(&theirs)?);
            if ours.iter().all(|d| theirs.contains(d)) {
                return Ok(false);
            }
            if theirs.iter().any(|d| !ours.contains(d)) {
                bail!("the target's tag holds {holds}, with signatures the source's lacks: left as it is");
            }
        }
        self.push_tag(target, tag, &copied).await?;
        Ok(true)
    }
}

/// The digests of a manifest's layers (a cosign tag's signatures; its config
/// is made from them), or of an index's manifests.
fn blob_digests(bytes: &[u8]) -> Result<Vec<String>> {
    match Manifest::parse(bytes)? {
        Manifest::Image { blobs, .. } => Ok(blobs.into_iter().skip(1).map(|b| b.digest).collect()),
        Manifest::Index { manifests, .. } => Ok(manifests.into_iter().map(|m| m.digest).collect()),
    }
}
