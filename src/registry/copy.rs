//! The exact-bytes image copy: manifests travel as the bytes they came as,
//! blobs stream from source to target (never buffered whole), in parallel,
//! with retries. A copy lands by digest; tags are pushed one by one after it
//! (what may move is decided in `copy/tags.rs`), so a failed copy tags nothing.

pub mod referrers;
pub mod tags;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_client::client::{BlobResponse, SizedStream};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::RegistryOperation;
use reqwest::header::HeaderValue;

use super::observe::{BlobObserver, CopyObserver};
use super::retry::with_retries;
use super::verify::Counted;
use super::{manifest_digest, pull_manifest, Client};
use crate::image::ImageRef;
use crate::manifest::{
    filter_platforms, is_distributable, is_index, sha256_digest, Descriptor, Manifest,
};
use tags::{tag_refusal, TagRefused};

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blob transfers at once.
    pub jobs: usize,
    /// Attempts per transfer.
    pub retries: u32,
    /// Platforms to keep (`os/arch[/variant]`); all when empty.
    pub platforms: Vec<String>,
    /// Whether the artifacts that refer to each copied manifest (signatures,
    /// attestations, SBOMs) are copied too (`copy/referrers.rs`).
    pub referrers: bool,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Digest of the top manifest in the target.
    pub digest: String,
    /// The top manifest's exact bytes and media type, for tagging it.
    pub top: Bytes,
    pub media_type: String,
    /// Every manifest of the copy, by digest: the children, innermost
    /// first, then the top one.
    pub manifests: Vec<String>,
    pub blobs_copied: usize,
    pub blobs_skipped: usize,
    pub bytes_copied: u64,
}

/// Copies images between registries with one shared oci-client.
#[derive(Clone)]
pub struct Copier {
    client: Client,
    options: CopyOptions,
    /// Blob digest → target repository that holds it, for cross-repository mounts.
    holders: Arc<Mutex<HashMap<String, String>>>,
}

struct Collected {
    /// Child manifests (digest, bytes, media type), pushed by digest before the top one.
    children: Vec<(String, Bytes, String)>,
    blobs: Vec<Descriptor>,
}

enum BlobOutcome {
    Present,
    Mounted,
    Copied(u64),
}

impl Copier {
    pub fn new(client: Client, options: CopyOptions) -> Self {
        Self {
            client,
            options,
            holders: Arc::default(),
        }
    }

    /// The digest a source resolves to now (no network for a pinned digest).
    pub async fn resolve(&self, source: &ImageRef) -> Result<String> {
        if let Some(digest) = &source.digest {
            return Ok(digest.clone());
        }
        with_retries(self.options.retries, "resolving source", || async {
            manifest_digest(&self.client, source)
                .await?
                .with_context(|| format!("manifest {source} not found"))
        })
        .await
    }

    /// The digest `image` (a tag) points at now, `None` when there is no such tag.
    /// (`manifest_digest` names the image in its errors.)
    pub async fn tag_digest(&self, image: &ImageRef) -> Result<Option<String>> {
        with_retries(self.options.retries, "reading tag", || {
            manifest_digest(&self.client, image)
        })
        .await
    }

    /// Every manifest `digest` of `image` consists of, by digest: the
    /// children (innermost first), then `digest` itself. For an image that
    /// is in place already, read from where it is.
    pub async fn manifest_digests(&self, image: &ImageRef, digest: &str) -> Result<Vec<String>> {
        let pinned = image.at_digest(digest);
        let (top, _) = with_retries(self.options.retries, "pulling manifest", || {
            pull_manifest(&self.client, &pinned)
        })
        .await?;
        let parsed =
            Manifest::parse(&top).with_context(|| format!("reading manifest of {image}"))?;
        let collected = self.collect(image, &parsed).await?;
        let mut digests: Vec<String> = collected.children.into_iter().map(|(d, _, _)| d).collect();
        digests.push(digest.to_string());
        Ok(digests)
    }

    /// Whether referrers are brought along (`--copy-referrers`).
    pub fn copies_referrers(&self) -> bool {
        self.options.referrers
    }

    /// Whether a platform filter is set (the target's digest then differs from the source's).
    pub fn filters_platforms(&self) -> bool {
        !self.options.platforms.is_empty()
    }

    /// Points `tag` of `target` at the copied top manifest. A refusal (a 4xx
    /// answer) comes back as one line naming the tag, the digest it holds
    /// now (read after the refusal) and the registry's reason.
    pub async fn push_tag(&self, target: &ImageRef, tag: &str, copied: &Copied) -> Result<()> {
        let at = target.at_tag(tag);
        let pushed = self
            .push_manifest(&at, &copied.digest, &copied.top, &copied.media_type)
            .await;
        let Err(err) = pushed else {
            return Ok(());
        };
        let Some(refusal) = err.chain().find_map(|cause| match cause.downcast_ref() {
            Some(OciDistributionError::ServerError { code, message, .. }) => {
                tag_refusal(*code, message)
            }
            _ => None,
        }) else {
            return Err(err);
        };
        let holds = self.tag_digest(&at).await.ok().flatten();
        Err(anyhow::Error::new(TagRefused {
            tag: tag.to_string(),
            wanted: copied.digest.clone(),
            holds,
            refusal,
        })
        .context(format!("pushing tag {tag} of {}", target.name())))
    }

    /// Copies the manifest `source_digest` of `source` to `target`, by
    /// digest: every blob, every child manifest, then the top manifest once
    /// everything it names has landed. No tag moves here ([`Self::push_tag`]).
    /// `observer` hears of every blob; finishing the image is the caller's.
    pub async fn copy<O>(
        &self,
        source: &ImageRef,
        source_digest: &str,
        target: &ImageRef,
        observer: &O,
    ) -> Result<Copied>
    where
        O: CopyObserver + Clone + 'static,
    {
        let pinned = source.at_digest(source_digest);
        let (mut top, _) = with_retries(self.options.retries, "pulling source manifest", || {
            pull_manifest(&self.client, &pinned)
        })
        .await?;
        if !self.options.platforms.is_empty() {
            // Only an index has platforms to choose from: a single-platform
            // image is copied as it is (serve's `--platforms auto` asks for
            // the cluster's platforms of every tag it copies).
            match Manifest::parse(&top) {
                Ok(Manifest::Index { .. }) => {
                    top = Bytes::from(filter_platforms(&top, &self.options.platforms)?)
                }
                _ => tracing::debug!(image = %source, "not a multi-platform image: copied whole"),
            }
        }
        self.copy_bytes(source, top, target, observer).await
    }

    /// Copies a manifest whose exact bytes are in hand, and everything it
    /// names, from `source` to `target` by digest (see [`Self::copy`]).
    pub async fn copy_bytes<O>(
        &self,
        source: &ImageRef,
        top: Bytes,
        target: &ImageRef,
        observer: &O,
    ) -> Result<Copied>
    where
        O: CopyObserver + Clone + 'static,
    {
        let observer: Arc<dyn CopyObserver> = Arc::new(observer.clone());
        let top_digest = sha256_digest(&top);
        let top_manifest =
            Manifest::parse(&top).with_context(|| format!("reading manifest of {source}"))?;
        let collected = self.collect(source, &top_manifest).await?;

        let total: u64 = collected.blobs.iter().map(|b| b.size).sum();
        observer.set_total(total);
        let outcomes: Vec<BlobOutcome> = stream::iter(collected.blobs.clone())
            .map(|blob| {
                let this = self.clone();
                let (source, target) = (source.clone(), target.clone());
                let observer = observer.clone();
                AbortOnDrop(tokio::spawn(async move {
                    this.copy_blob(&source, &target, &blob, observer).await
                }))
            })
            .buffer_unordered(self.options.jobs)
            .map(|joined| joined.context("blob copy task failed")?)
            .try_collect()
            .await?;

        // Image manifests name only blobs: push them all at once. Indexes name
        // manifests, so they follow, innermost first.
        let (indexes, images): (Vec<_>, Vec<_>) = collected
            .children
            .iter()
            .partition(|(_, _, media_type)| is_index(media_type));
        stream::iter(images)
            .map(|(digest, bytes, media_type)| async move {
                self.push_manifest(&target.at_digest(digest), digest, bytes, media_type)
                    .await
            })
            .buffer_unordered(self.options.jobs)
            .try_collect::<Vec<()>>()
            .await?;
        for (digest, bytes, media_type) in indexes {
            self.push_manifest(&target.at_digest(digest), digest, bytes, media_type)
                .await?;
        }
        self.push_manifest(
            &target.at_digest(&top_digest),
            &top_digest,
            &top,
            top_manifest.media_type(),
        )
        .await?;

        let mut manifests: Vec<String> = collected
            .children
            .iter()
            .map(|(digest, _, _)| digest.clone())
            .collect();
        manifests.push(top_digest.clone());
        let mut copied = Copied {
            manifests,
            digest: top_digest,
            top,
            media_type: top_manifest.media_type().to_string(),
            blobs_copied: 0,
            blobs_skipped: 0,
            bytes_copied: 0,
        };
        for outcome in outcomes {
            match outcome {
                BlobOutcome::Copied(bytes) => {
                    copied.blobs_copied += 1;
                    copied.bytes_copied += bytes;
                }
                BlobOutcome::Present | BlobOutcome::Mounted => copied.blobs_skipped += 1,
            }
        }
        Ok(copied)
    }

    /// Walks the manifest tree: child manifests (exact bytes) and the unique blobs of all of them.
    async fn collect(&self, source: &ImageRef, top: &Manifest) -> Result<Collected> {
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        let mut pending = vec![top.clone()];
        while let Some(manifest) = pending.pop() {
            match manifest {
                Manifest::Image {
                    blobs: image_blobs, ..
                } => {
                    for blob in image_blobs {
                        if is_distributable(&blob) && seen.insert(blob.digest.clone()) {
                            blobs.push(blob);
                        }
                    }
                }
                Manifest::Index { manifests, .. } => {
                    let fetched: Vec<(String, Bytes)> = stream::iter(manifests)
                        .map(|child| async move {
                            let at = source.at_digest(&child.digest);
                            let (bytes, _) = with_retries(
                                self.options.retries,
                                "pulling child manifest",
                                || pull_manifest(&self.client, &at),
                            )
                            .await?;
                            Ok::<_, anyhow::Error>((child.digest, bytes))
                        })
                        .buffered(self.options.jobs)
                        .try_collect()
                        .await?;
                    for (digest, bytes) in fetched {
                        let parsed = Manifest::parse(&bytes)
                            .with_context(|| format!("reading manifest {digest} of {source}"))?;
                        children.push((digest, bytes, parsed.media_type().to_string()));
                        pending.push(parsed);
                    }
                }
            }
        }
        // Innermost first, so an index is pushed only after everything it names.
        children.reverse();
        Ok(Collected { children, blobs })
    }

    /// PUTs a manifest's exact bytes. A PUT of a manifest that is already
    /// there costs what a HEAD would, so none is asked first.
    async fn push_manifest(
        &self,
        at: &ImageRef,
        digest: &str,
        bytes: &Bytes,
        media_type: &str,
    ) -> Result<()> {
        let content_type = HeaderValue::from_str(media_type)
            .with_context(|| format!("invalid media type {media_type:?}"))?;
        let ours = sha256_digest(bytes) == digest;
        with_retries(self.options.retries, "pushing manifest", || async {
            self.client.authorize(at, RegistryOperation::Push).await?;
            let pushed = self
                .client
                .oci()
                .push_manifest_raw(&at.to_oci(), bytes.clone(), content_type.clone())
                .await;
            match pushed {
                Ok(_) => Ok(()),
                // Bytes that hash to the digest, refused as not matching it:
                // the registry misread them (distribution does, writing one
                // manifest from many pushes at once). Sent again, as a
                // transient failure; wrong bytes of ours would not get here.
                Err(err) if ours && super::retry::says_digest_invalid(&err) => Err(anyhow::Error::new(
                    std::io::Error::other(format!(
                        "the registry refused manifest {digest} as not matching its digest, which its bytes do: {err}"
                    )),
                )),
                Err(err) => Err(err.into()),
            }
        })
        .await
        .with_context(|| format!("pushing manifest {digest} to {at}"))
    }

    async fn copy_blob(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        blob: &Descriptor,
        image: Arc<dyn CopyObserver>,
    ) -> Result<BlobOutcome> {
        let progress = Arc::new(Mutex::new(image.blob(&blob.digest, blob.size)));
        let what = format!("copying blob {}", blob.digest);
        let outcome = with_retries(self.options.retries, &what, || {
            self.copy_blob_once(source, target, blob, progress.clone())
        })
        .await
        .with_context(|| format!("pushing blob {} to {}", blob.digest, target.name()))?;
        self.holders
            .lock()
            .expect("holders lock")
            .insert(blob.digest.clone(), target.repository.clone());
        match outcome {
            BlobOutcome::Copied(_) => {
                if let Ok(progress) = Arc::try_unwrap(progress) {
                    progress.into_inner().expect("progress lock").finish();
                }
            }
            BlobOutcome::Present => image.blob_skipped(&blob.digest, blob.size, "present"),
            BlobOutcome::Mounted => image.blob_skipped(&blob.digest, blob.size, "mounted"),
        }
        Ok(outcome)
    }

    /// The source blob as a stream. For sha256 blobs it asks for the whole
    /// blob as a range, `bytes=0-<size - 1>` (closed: go-containerregistry's
    /// registry refuses `bytes=0-`): a 206 answer comes unverified by
    /// oci-client, so the bytes are hashed once, by `Counted`, instead of
    /// twice. Other digests, empty blobs (and registries that answer 200)
    /// keep oci-client's own verification.
    async fn pull_blob(
        &self,
        source: &ImageRef,
        descriptor: &OciDescriptor,
    ) -> oci_client::errors::Result<SizedStream> {
        if !descriptor.digest.starts_with("sha256:") || descriptor.size <= 0 {
            return self
                .client
                .oci()
                .pull_blob_stream(&source.to_oci(), descriptor)
                .await;
        }
        match self
            .client
            .oci()
            .pull_blob_stream_partial(
                &source.to_oci(),
                descriptor,
                0,
                Some(descriptor.size as u64),
            )
            .await?
        {
            BlobResponse::Full(stream) | BlobResponse::Partial(stream) => Ok(stream),
        }
    }

    async fn copy_blob_once(
        &self,
        source: &ImageRef,
        target: &ImageRef,
        blob: &Descriptor,
        progress: Arc<Mutex<Box<dyn BlobObserver>>>,
    ) -> Result<BlobOutcome> {
        let target_oci = target.to_oci();
        for (image, op) in [
            (target, RegistryOperation::Pull),
            (target, RegistryOperation::Push),
            (source, RegistryOperation::Pull),
        ] {
            self.client.authorize(image, op).await?;
        }
        if self
            .client
            .oci()
            .blob_exists(&target_oci, &blob.digest)
            .await
            .context("checking target blob")?
        {
            return Ok(BlobOutcome::Present);
        }
        let holder = self
            .holders
            .lock()
            .expect("holders lock")
            .get(&blob.digest)
            .cloned();
        if let Some(repository) = holder.filter(|r| *r != target.repository) {
            let from = ImageRef {
                repository,
                ..target.clone()
            }
            .to_oci();
            // A declined mount (202) comes back as an error: upload normally then.
            if self
                .client
                .oci()
                .mount_blob(&target_oci, &from, &blob.digest)
                .await
                .is_ok()
            {
                return Ok(BlobOutcome::Mounted);
            }
        }
        progress.lock().expect("progress lock").restart();
        let descriptor = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            ..Default::default()
        };
        let pulled = self
            .pull_blob(source, &descriptor)
            .await
            .context("reading source blob")?;
        let fault = Arc::new(Mutex::new(None));
        let body = Counted::new(pulled.stream, blob, progress, fault.clone());
        let pushed = self
            .client
            .oci()
            .push_blob_stream(&target_oci, body, &blob.digest, Some(blob.size))
            .await;
        if let Some(fault) = fault.lock().expect("fault lock").take() {
            return Err(anyhow::Error::new(fault));
        }
        match pushed {
            Ok(_) => {}
            // 201 Created without the Location the spec asks for (as
            // go-containerregistry's registry answers): the blob landed, as
            // the registry says once asked.
            Err(OciDistributionError::RegistryNoLocationError)
                if self
                    .client
                    .oci()
                    .blob_exists(&target_oci, &blob.digest)
                    .await
                    .unwrap_or(false) => {}
            Err(err) => return Err(anyhow::Error::new(err).context("uploading to target")),
        }
        Ok(BlobOutcome::Copied(blob.size))
    }
}

/// A spawned blob task that is aborted when its handle is dropped: when one
/// blob fails for good, the copy returns and its other transfers (and their
/// retries) stop with it instead of running on behind the caller's back.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Refuses a platform filter that would change a pinned digest.
pub fn check_platform_filter(source: &ImageRef, platforms: &[String]) -> Result<()> {
    if !platforms.is_empty() && source.digest.is_some() {
        bail!("--platforms cannot be used with the digest-pinned {source}: filtering would change its digest");
    }
    Ok(())
}
