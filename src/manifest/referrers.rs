//! Pure: OCI 1.1 referrers (distribution-spec "Listing Referrers") and
//! cosign's tags. What a referrer's manifest says of itself (its subject, the
//! descriptor a referrers index lists it by), the referrers tag schema's
//! index with new entries merged in, and the tag names cosign keeps its
//! signatures, attestations and SBOMs under. No I/O.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::OCI_INDEX;
use crate::image::digest_tag;

/// cosign's tag suffixes for what it attaches to `sha256:<hex>`:
/// `sha256-<hex>.sig`, `.att` and `.sbom`.
pub const COSIGN_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// The referrers tag schema's tag for a subject: `sha256-<hex>`.
pub fn fallback_tag(subject: &str) -> String {
    digest_tag(subject)
}

/// cosign's tags for a subject, in [`COSIGN_SUFFIXES`] order.
pub fn cosign_tags(subject: &str) -> Vec<String> {
    let base = digest_tag(subject);
    COSIGN_SUFFIXES
        .iter()
        .map(|s| format!("{base}{s}"))
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Config>,
    #[serde(default)]
    subject: Option<Subject>,
    #[serde(default)]
    annotations: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    media_type: Option<String>,
}

#[derive(Deserialize)]
struct Subject {
    digest: String,
}

/// What a referrer's manifest says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    /// The digest of the manifest it refers to, when it names one.
    pub subject: Option<String>,
    /// The descriptor a referrers index lists it by (OCI distribution-spec:
    /// media type, digest, size, artifact type, annotations).
    pub entry: Value,
}

/// Reads a referrer's manifest (`bytes`, whose digest is `digest`). Its
/// artifact type is the manifest's `artifactType`, else its config's media
/// type, as the spec has registries list it.
pub fn referrer(bytes: &[u8], digest: &str) -> Result<Referrer> {
    let fields: Fields =
        serde_json::from_slice(bytes).with_context(|| format!("parsing manifest {digest}"))?;
    let mut entry = Map::new();
    let media_type = fields
        .media_type
        .unwrap_or_else(|| super::OCI_MANIFEST.into());
    entry.insert("mediaType".into(), json!(media_type));
    entry.insert("digest".into(), json!(digest));
    entry.insert("size".into(), json!(bytes.len()));
    let artifact_type = fields
        .artifact_type
        .or_else(|| fields.config.and_then(|c| c.media_type));
    if let Some(artifact_type) = artifact_type {
        entry.insert("artifactType".into(), json!(artifact_type));
    }
    if let Some(annotations) = fields.annotations.filter(|a| !a.is_empty()) {
        entry.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Referrer {
        subject: fields.subject.map(|s| s.digest),
        entry: Value::Object(entry),
    })
}

/// The digests a referrers index lists.
pub fn listed(index: &[u8]) -> Result<Vec<String>> {
    let doc: Value = serde_json::from_slice(index).context("parsing referrers index")?;
    let Some(entries) = doc.get("manifests").and_then(Value::as_array) else {
        bail!("not an image index: it lists no manifests");
    };
    Ok(entries
        .iter()
        .filter_map(|e| e.get("digest")?.as_str().map(str::to_string))
        .collect())
}

/// The referrers tag schema's index for a subject: what the tag holds now
/// (`existing`, when it holds an index) with `entries` added that it does not
/// list yet, existing entries kept as they are and first. `None` when every
/// entry is listed already (nothing to push). An existing manifest that is
/// not an OCI image index is refused: the tag is something else's.
pub fn merged_index(existing: Option<&[u8]>, entries: &[Value]) -> Result<Option<Vec<u8>>> {
    let mut doc = match existing {
        Some(bytes) => {
            let doc: Value = serde_json::from_slice(bytes).context("parsing referrers index")?;
            let media_type = doc.get("mediaType").and_then(Value::as_str);
            if media_type != Some(OCI_INDEX) || doc.get("manifests").is_none() {
                bail!(
                    "it holds a {} manifest, not a referrers index",
                    media_type.unwrap_or("untyped")
                );
            }
            doc
        }
        None => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
    };
    let manifests = doc
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .context("referrers index: manifests is not a list")?;
    let mut added = false;
    for entry in entries {
        let digest = entry.get("digest");
        if !manifests.iter().any(|m| m.get("digest") == digest) {
            manifests.push(entry.clone());
            added = true;
        }
    }
    if !added {
        return Ok(None);
    }
    serde_json::to_vec(&doc)
        .map(Some)
        .context("serialising the referrers index")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBJECT: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn sbom() -> Vec<u8> {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/spdx+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
            "layers": [{"mediaType": "application/spdx+json", "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222", "size": 10}],
            "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": SUBJECT, "size": 300},
            "annotations": {"org.opencontainers.image.created": "2026-12-07T00:00:00Z"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn cosign_tags_are_the_digest_with_a_dash_and_a_suffix() {
        assert_eq!(
            cosign_tags(SUBJECT),
            [".sig", ".att", ".sbom"].map(|s| format!("sha256-{}{s}", &SUBJECT[7..]))
        );
        assert_eq!(fallback_tag(SUBJECT), format!("sha256-{}", &SUBJECT[7..]));
    }

    #[test]
    fn a_referrer_is_listed_by_its_artifact_type_and_annotations() {
        let bytes = sbom();
        let r = referrer(&bytes, "sha256:abc").unwrap();
        assert_eq!(r.subject.as_deref(), Some(SUBJECT));
        assert_eq!(
            r.entry,
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:abc",
                "size": bytes.len(),
                "artifactType": "application/spdx+json",
                "annotations": {"org.opencontainers.image.created": "2026-12-07T00:00:00Z"}
            })
        );
    }

    #[test]
    fn without_an_artifact_type_the_config_media_type_stands_for_it() {
        let bytes = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.dev.cosign.artifact.sig.v1+json","digest":"sha256:00","size":1},"layers":[]}"#;
        let r = referrer(bytes, "sha256:def").unwrap();
        assert_eq!(r.subject, None);
        assert_eq!(
            r.entry["artifactType"],
            "application/vnd.dev.cosign.artifact.sig.v1+json"
        );
        assert!(r.entry.get("annotations").is_none());
    }

    #[test]
    fn merging_keeps_what_is_listed_and_adds_only_what_is_new() {
        let a = json!({"mediaType": "m", "digest": "sha256:a", "size": 1});
        let b = json!({"mediaType": "m", "digest": "sha256:b", "size": 2});
        let first = merged_index(None, std::slice::from_ref(&a))
            .unwrap()
            .unwrap();
        assert_eq!(listed(&first).unwrap(), ["sha256:a"]);
        assert_eq!(
            merged_index(Some(&first), std::slice::from_ref(&a)).unwrap(),
            None
        );
        let both = merged_index(Some(&first), &[b, a]).unwrap().unwrap();
        assert_eq!(listed(&both).unwrap(), ["sha256:a", "sha256:b"]);
        let doc: Value = serde_json::from_slice(&both).unwrap();
        assert_eq!(doc["mediaType"], OCI_INDEX);
        assert_eq!(doc["schemaVersion"], 2);
    }

    #[test]
    fn a_tag_holding_an_image_is_not_taken_for_a_referrers_index() {
        let image = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:0","size":1},"layers":[]}"#;
        let entry = json!({"digest": "sha256:a"});
        let err = merged_index(Some(image), &[entry]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it holds a application/vnd.oci.image.manifest.v1+json manifest, not a referrers index"
        );
        assert!(listed(image).is_err());
    }
}
