//! Mutable tags follow their source (`--tag-drift`): is a mirrored tag a pod
//! is admitted with still where its source tag is? The mirror's digest is the
//! presence check's; the source tag is read (a manifest HEAD: free on Docker
//! Hub's pull limit; anonymously) at most once per `--tag-recheck-interval`
//! per tag, in one flight, within the lookup time limit; no answer is no drift. What a drift leads to is
//! decided by the pure functions below: a warning on the admission, and under
//! `sync` a copy of the source pinned at what its tag is now, which moves the
//! mirror's tag only while the source tag still points there (DESIGN §11:
//! never backwards). Pods keep starting from the current copy, ungated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::flights::Flights;
use super::presence::Checker;
use super::sources::Sources;
use crate::cli::TagDrift;
use crate::image::{ImageRef, TargetRegistry};
use crate::mutate::record::originals;

/// A mirrored tag that its source tag has moved away from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifted {
    /// What the mirror's tag points at.
    pub mirror: String,
    /// What the source's tag points at now.
    pub now: String,
}

/// Drift checks of admitted tags.
pub struct Drifts {
    pub policy: TagDrift,
    /// The target's tags cannot move (`--tag-mutability IMMUTABLE`): drift is
    /// reported, never synced.
    pub immutable: bool,
    checker: Arc<Checker>,
    sources: Arc<Sources>,
    /// Source tag → the digest it pointed at when read.
    cache: Flights<Option<String>>,
    interval: Duration,
    timeout: Duration,
}

impl Drifts {
    pub fn new(
        policy: TagDrift,
        immutable: bool,
        checker: Arc<Checker>,
        sources: Arc<Sources>,
        interval: Duration,
        timeout: Duration,
    ) -> Self {
        Self {
            policy,
            immutable,
            checker,
            sources,
            cache: Flights::default(),
            interval,
            timeout,
        }
    }

    /// Whether `target`'s tag drifted from `source`'s. The mirror's digest is
    /// the presence check's (the admission has just made it, and it is
    /// cached as presence is); the source's is read at most once per interval.
    pub async fn check(self: &Arc<Self>, source: &ImageRef, target: &ImageRef) -> Option<Drifted> {
        let (_, mirror, _) = self.checker.check_digest(target).await;
        let now = self.source_digest(source).await?;
        let mirror = mirror?;
        if mirror == now {
            return None;
        }
        // A mirror of fewer platforms (`--platforms`) is the source's tag
        // when the index it was filtered from is what the tag is now.
        let facts = self.checker.index_facts(target, &mirror).await;
        if facts.and_then(|f| f.filtered_from).as_deref() == Some(now.as_str()) {
            return None;
        }
        Some(Drifted { mirror, now })
    }

    /// What `source`'s tag points at, read anonymously (cached for the
    /// interval; no answer in time is not cached).
    async fn source_digest(self: &Arc<Self>, source: &ImageRef) -> Option<String> {
        let this = self.clone();
        let image = source.clone();
        let (digest, _) = self
            .cache
            .get(&source.to_string(), move || async move {
                match tokio::time::timeout(this.timeout, this.sources.digest(&image)).await {
                    // A tag gone at the source is no drift: the mirror stays.
                    Ok(Ok(digest)) => (digest, this.interval),
                    Ok(Err(err)) => {
                        tracing::debug!(image = %image, error = %format!("{err:#}"), "reading a source tag for drift failed");
                        (None, Duration::ZERO)
                    }
                    Err(_) => (None, Duration::ZERO),
                }
            })
            .await;
        digest
    }

    /// What is done about a drift: `synced` when a copy is to move the tag.
    pub fn syncs(&self) -> bool {
        self.policy == TagDrift::Sync && !self.immutable
    }

    /// What is done about a drift.
    pub fn done(&self) -> Done {
        match (self.policy, self.syncs()) {
            (_, true) => Done::Synced,
            (TagDrift::Sync, false) => Done::Immutable,
            _ => Done::Warned,
        }
    }
}

/// Whether an image is looked at: a tag, not pinned, on both sides.
pub fn followed(source: &ImageRef, target: &ImageRef) -> bool {
    source.digest.is_none()
        && target.digest.is_none()
        && source.tag.is_some()
        && target.tag.is_some()
}

/// A pod running a mirrored tag: (namespace, name).
pub type PodKey = (String, String);

/// The mirrored tags pods run, from privatize's own record on each pod
/// (`privatize.io/original-images`), each with the pods that run it. A record
/// is only believed where it derives: the source it names maps, by the naming
/// rule, to exactly the image the container runs (a tenant may write any
/// record on their own pod).
pub fn in_use<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    target: &TargetRegistry,
) -> BTreeMap<(String, String), Vec<PodKey>> {
    let mut tags: BTreeMap<(String, String), Vec<PodKey>> = BTreeMap::new();
    for pod in pods {
        let Ok(recorded) = originals(pod) else {
            continue;
        };
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for container in containers {
            let Some(original) = recorded.get(&container.name) else {
                continue;
            };
            let (Ok(source), Some(Ok(running))) = (
                ImageRef::parse(original),
                container.image.as_deref().map(ImageRef::parse),
            ) else {
                continue;
            };
            // A tag pinned at admission (`--pin-digests`) still follows its tag.
            let running = match source.digest {
                None => ImageRef {
                    digest: None,
                    ..running
                },
                Some(_) => running,
            };
            if target.target_reference(&source) != running || !followed(&source, &running) {
                continue;
            }
            let key = (pod.namespace().unwrap_or_default(), pod.name_any());
            let pods = tags
                .entry((source.to_string(), running.to_string()))
                .or_default();
            if !pods.contains(&key) {
                pods.push(key);
            }
        }
    }
    tags
}

/// The copy that moves the mirror's tag: the source pinned at what its tag
/// points at now, to the target pinned the same (its Job is one per digest).
pub fn sync_copy(source: &ImageRef, target: &ImageRef, now: &str) -> (ImageRef, ImageRef) {
    let pin = |image: &ImageRef| ImageRef {
        digest: Some(now.to_string()),
        ..image.clone()
    };
    (pin(source), pin(target))
}

/// The admission warning for one drifted tag.
pub fn warning(source: &ImageRef, target: &ImageRef, drifted: &Drifted, done: Done) -> String {
    let tag = target.tag.as_deref().unwrap_or("latest");
    let then = match done {
        Done::Warned => "the pod runs the mirror's copy (PRIVATIZE_TAG_DRIFT=warn)",
        Done::Synced => {
            "the pod runs the mirror's copy; a copy Job moves the tag (PRIVATIZE_TAG_DRIFT=sync)"
        }
        Done::Immutable => {
            "the pod runs the mirror's copy; the target's tags are IMMUTABLE, so the tag stays"
        }
    };
    format!(
        "{target}: the mirror's {tag} is {}, {source} is {} now: {then}",
        drifted.mirror, drifted.now
    )
}

/// What was done about a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Warned,
    Synced,
    Immutable,
}

impl Done {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Warned | Self::Immutable => "warned",
            Self::Synced => "synced",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    #[test]
    fn only_tags_on_both_sides_are_followed() {
        let (s, t) = (image("nginx:1.27"), image("r.example/m/nginx:1.27"));
        assert!(followed(&s, &t));
        let pinned = image(
            "nginx:1.27@sha256:1111111111111111111111111111111111111111111111111111111111111111",
        );
        assert!(!followed(&pinned, &t));
        let at_digest = image("r.example/m/nginx@sha256:1111111111111111111111111111111111111111111111111111111111111111");
        assert!(!followed(&s, &at_digest));
    }

    fn pod(name: &str, containers: &[(&str, &str)], record: &str) -> Pod {
        let containers: Vec<_> = containers
            .iter()
            .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "apps", "annotations": {"privatize.io/original-images": record}},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    #[test]
    fn tags_in_use_come_from_records_that_derive() {
        let target = TargetRegistry::parse("r.example/mirror").unwrap();
        let mirrored = "r.example/mirror/docker.io/library/nginx:1.27";
        let pinned_side = format!("{mirrored}@sha256:{}", "2".repeat(64));
        let pods = [
            pod("a", &[("app", mirrored)], r#"{"app":"nginx:1.27"}"#),
            pod(
                "b",
                // `side` pinned at admission (--pin-digests): the same tag.
                &[("app", mirrored), ("side", &pinned_side)],
                r#"{"app":"nginx:1.27","side":"nginx:1.27"}"#,
            ),
            // A forged record: it names another source for the same target tag.
            pod(
                "forged",
                &[("app", mirrored)],
                r#"{"app":"evil.example/nginx:1.27"}"#,
            ),
            // Pinned: not followed.
            pod(
                "pinned",
                &[("app", &format!("{mirrored}@sha256:{}", "1".repeat(64)))],
                &format!(r#"{{"app":"nginx:1.27@sha256:{}"}}"#, "1".repeat(64)),
            ),
            // No record: not rewritten by privatize.
            pod("plain", &[("app", mirrored)], "{}"),
        ];
        let found = in_use(&pods, &target);
        let key = (
            "docker.io/library/nginx:1.27".to_string(),
            mirrored.to_string(),
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[&key],
            [
                ("apps".to_string(), "a".to_string()),
                ("apps".to_string(), "b".to_string())
            ]
        );
    }

    #[test]
    fn the_sync_copy_pins_both_sides_at_what_the_source_tag_is_now() {
        let (s, t) = (image("nginx:1.27"), image("r.example/m/nginx:1.27"));
        let now = format!("sha256:{}", "2".repeat(64));
        let (ps, pt) = sync_copy(&s, &t, &now);
        assert_eq!(
            ps.to_string(),
            format!("docker.io/library/nginx:1.27@{now}")
        );
        assert_eq!(pt.to_string(), format!("r.example/m/nginx:1.27@{now}"));
    }

    #[test]
    fn the_warning_names_both_digests_and_what_happens() {
        let (s, t) = (image("nginx:1.27"), image("r.example/m/nginx:1.27"));
        let d = Drifted {
            mirror: "sha256:a".into(),
            now: "sha256:b".into(),
        };
        assert_eq!(
            warning(&s, &t, &d, Done::Warned),
            "r.example/m/nginx:1.27: the mirror's 1.27 is sha256:a, docker.io/library/nginx:1.27 is sha256:b now: the pod runs the mirror's copy (PRIVATIZE_TAG_DRIFT=warn)"
        );
        assert!(warning(&s, &t, &d, Done::Immutable).contains("IMMUTABLE"));
        assert_eq!(Done::Immutable.label(), "warned");
    }
}
