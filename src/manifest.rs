//! Pure manifest logic: what a manifest's bytes say (its media type, the
//! manifests or blobs it references) and the platform filter. No I/O.

pub mod referrers;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest type a copy accepts, for the `Accept` header.
pub const ACCEPTED: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// A content descriptor: what a manifest points at.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch[/variant]`, as `--platforms` spells it.
    pub fn spec(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An OCI index or Docker manifest list: child manifests.
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
    /// A single image: its config and layers (blobs).
    Image {
        media_type: String,
        blobs: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Reads a manifest's bytes. The media type comes from the body's
    /// `mediaType`, or is inferred (index when it lists manifests).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let raw: Raw = serde_json::from_slice(bytes).context("parsing manifest JSON")?;
        if raw.schema_version == Some(1) {
            bail!("Docker schema 1 manifests are not supported (deprecated since 2017; re-push the image)");
        }
        let media_type = raw.media_type.clone();
        match (raw.manifests, raw.config) {
            (Some(manifests), None) => Ok(Self::Index { media_type: media_type.unwrap_or_else(|| OCI_INDEX.into()), manifests }),
            (None, Some(config)) => {
                let mut blobs = vec![config];
                blobs.extend(raw.layers.unwrap_or_default());
                Ok(Self::Image { media_type: media_type.unwrap_or_else(|| OCI_MANIFEST.into()), blobs })
            }
            _ => bail!("unrecognised manifest (media type {media_type:?}): neither an index nor an image manifest"),
        }
    }

    /// The media type to send as `Content-Type` when pushing these bytes.
    pub fn media_type(&self) -> &str {
        match self {
            Self::Index { media_type, .. } | Self::Image { media_type, .. } => media_type,
        }
    }
}

/// Whether a media type is an index (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a blob can be copied: foreign (non-distributable) layers with
/// external URLs stay where they are, as registries expect.
pub fn is_distributable(blob: &Descriptor) -> bool {
    blob.urls.is_empty()
        || !(blob.media_type.contains("foreign") || blob.media_type.contains("nondistributable"))
}

/// The annotation a filtered index carries: the digest of the source index it
/// was filtered from (so a mirror holding fewer platforms is still known to be
/// the source's tag, not a drift from it).
pub const FILTERED_FROM: &str = "io.privatize.filtered-from";

/// Whether a `--platforms` entry asks for `platform`: `os/arch` is any
/// variant of it, `os/arch/variant` that variant (arm64's `v8` is also the
/// entry with no variant, as the OCI spec has it).
pub fn platform_matches(wanted: &str, platform: &Platform) -> bool {
    let mut parts = wanted.splitn(3, '/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    if os != Some(platform.os.as_str()) || arch != Some(platform.architecture.as_str()) {
        return false;
    }
    fn or_default<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
        match (arch, variant) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        }
    }
    let arch = platform.architecture.as_str();
    variant.is_none() || or_default(arch, variant) == or_default(arch, platform.variant.as_deref())
}

/// Keeps only the index entries whose platform `platforms` asks for
/// ([`platform_matches`]; attestation entries for kept images stay too),
/// records the source index's digest under [`FILTERED_FROM`] and
/// re-serialises the index. The result has a new digest, which is why this
/// is refused for digest-pinned sources.
pub fn filter_platforms(bytes: &[u8], platforms: &[String]) -> Result<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(bytes).context("parsing index JSON")?;
    let entries = doc
        .get_mut("manifests")
        .and_then(|m| m.as_array_mut())
        .context("--platforms applies to multi-platform images only")?;
    let platform_of = |e: &serde_json::Value| -> Option<Platform> {
        serde_json::from_value::<Platform>(e.get("platform")?.clone()).ok()
    };
    let kept: Vec<String> = entries
        .iter()
        .filter(|e| {
            platform_of(e).is_some_and(|p| platforms.iter().any(|w| platform_matches(w, &p)))
        })
        .filter_map(|e| e.get("digest")?.as_str().map(str::to_string))
        .collect();
    if kept.is_empty() {
        bail!("none of the platforms {platforms:?} is in the image");
    }
    entries.retain(|e| {
        let digest = e.get("digest").and_then(|d| d.as_str()).unwrap_or_default();
        let attests = e
            .pointer("/annotations/vnd.docker.reference.digest")
            .and_then(|d| d.as_str())
            .is_some_and(|d| kept.iter().any(|k| k == d));
        kept.iter().any(|k| k == digest) || attests
    });
    let object = doc
        .as_object_mut()
        .context("the index is not a JSON object")?;
    let annotations = object
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    let Some(annotations) = annotations.as_object_mut() else {
        bail!("the index's annotations are not a JSON object");
    };
    annotations.insert(FILTERED_FROM.into(), sha256_digest(bytes).into());
    serde_json::to_vec(&doc).context("serialising the filtered index")
}

/// What an index says about itself: the platforms (`os/arch[/variant]`) of
/// its image entries (attestations, `unknown/unknown`, left out), and the
/// source index it was filtered from, if it was. None for anything else.
pub fn index_platforms(bytes: &[u8]) -> Option<(Vec<String>, Option<String>)> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
        #[serde(default)]
        annotations: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(bytes).ok()?;
    let mut platforms: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::spec)
        .collect();
    platforms.sort();
    platforms.dedup();
    Some((platforms, index.annotations.get(FILTERED_FROM).cloned()))
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    finish_digest(Sha256::new_with_prefix(bytes))
}

/// `sha256:<hex>` of what a hasher has seen (for streamed bytes).
pub fn finish_digest(hasher: Sha256) -> String {
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}
