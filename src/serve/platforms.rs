//! `--platforms`: which platforms a copy Job copies of a multi-platform tag.
//! Under `auto` the cluster's nodes say: a metadata-only watch of Nodes keeps
//! the set of their `kubernetes.io/os` / `kubernetes.io/arch` labels. Until
//! the watch has listed them (or when serve may not list Nodes) a copy gets
//! every platform, which is never wrong, only bigger. A node of a platform
//! not seen before pokes the pass over the tags in use (`pods/pass.rs`).
//! Digest-pinned references always get every platform (a filtered index
//! would have another digest than the one the pod asks for).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cli::Platforms;
use crate::image::ImageRef;
use crate::manifest::{platform_matches, Platform};

/// The node labels a platform is read from (the kubelet sets both).
const OS_LABEL: &str = "kubernetes.io/os";
const ARCH_LABEL: &str = "kubernetes.io/arch";

/// What copies are restricted to, and (under `auto`) the nodes' platforms.
pub struct CopyPlatforms {
    choice: Platforms,
    /// `os/arch` of the nodes, sorted; empty until the watch has listed them.
    nodes: RwLock<Vec<String>>,
    /// Fires when a node of a platform not seen before appears.
    pub joined: Notify,
}

impl CopyPlatforms {
    pub fn new(choice: Platforms) -> Self {
        Self {
            choice,
            nodes: RwLock::new(Vec::new()),
            joined: Notify::new(),
        }
    }

    /// Whether the nodes decide (`--platforms auto`).
    pub fn auto(&self) -> bool {
        self.choice == Platforms::Auto
    }

    /// The platforms a copy of `source` is restricted to; empty: every one.
    pub fn for_copy(&self, source: &ImageRef) -> Vec<String> {
        if source.digest.is_some() {
            return Vec::new();
        }
        match &self.choice {
            Platforms::All => Vec::new(),
            Platforms::List(list) => list.clone(),
            Platforms::Auto => self.nodes(),
        }
    }

    /// The nodes' platforms as last seen (empty before the first list).
    pub fn nodes(&self) -> Vec<String> {
        self.nodes.read().expect("platforms lock").clone()
    }

    /// Takes the nodes' platforms; says whether one is new.
    fn update(&self, now: Vec<String>) -> bool {
        let mut nodes = self.nodes.write().expect("platforms lock");
        let new = now.iter().any(|p| !nodes.contains(p));
        if *nodes != now {
            tracing::info!(platforms = %now.join(","), "the cluster's node platforms");
            *nodes = now;
        }
        new
    }

    /// Watches the Nodes (metadata only) until `shutdown`; nothing unless `auto`.
    pub async fn run(self: Arc<Self>, client: Client, shutdown: CancellationToken) {
        if !self.auto() {
            return;
        }
        let (store, writer) = reflector::store();
        let stream = watcher(
            Api::<PartialObjectMeta<Node>>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(writer);
        futures_util::pin_mut!(stream);
        let mut listed = false;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Err(err)) => tracing::warn!(
                    error = %err,
                    "watching Nodes for --platforms auto (copies get every platform until it works; install --platforms auto grants the right)"
                ),
                Some(Ok(event)) => {
                    listed |= matches!(event, watcher::Event::InitDone);
                    if !listed
                        || matches!(event, watcher::Event::Init | watcher::Event::InitApply(_))
                    {
                        continue;
                    }
                    let labels: Vec<BTreeMap<String, String>> = store
                        .state()
                        .iter()
                        .map(|n| n.metadata.labels.clone().unwrap_or_default())
                        .collect();
                    if self.update(node_platforms(labels.iter())) {
                        self.joined.notify_one();
                    }
                }
            }
        }
    }
}

/// The `os/arch` of every node that has both labels, sorted, once each.
pub fn node_platforms<'a>(
    labels: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> Vec<String> {
    let mut platforms: Vec<String> = labels
        .filter_map(|l| Some(format!("{}/{}", l.get(OS_LABEL)?, l.get(ARCH_LABEL)?)))
        .collect();
    platforms.sort();
    platforms.dedup();
    platforms
}

/// The wanted platforms an index lacks (its own as `os/arch[/variant]`).
pub fn missing(wanted: &[String], has: &[String]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| {
            !has.iter()
                .any(|h| parse_spec(h).is_some_and(|p| platform_matches(w, &p)))
        })
        .cloned()
        .collect()
}

/// What a copy that adds `wanted` to an index of `has` asks for: both, so a
/// copy for one cluster never drops another's platforms from a shared mirror.
pub fn widened(wanted: &[String], has: &[String]) -> Vec<String> {
    let mut all: Vec<String> = has.iter().chain(wanted).cloned().collect();
    all.sort();
    all.dedup();
    all
}

fn parse_spec(spec: &str) -> Option<Platform> {
    let mut parts = spec.splitn(3, '/');
    Some(Platform {
        os: parts.next()?.to_string(),
        architecture: parts.next()?.to_string(),
        variant: parts.next().map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn node_platforms_come_from_both_labels_once_each() {
        let nodes = [
            labels(&[(OS_LABEL, "linux"), (ARCH_LABEL, "arm64")]),
            labels(&[(OS_LABEL, "linux"), (ARCH_LABEL, "amd64")]),
            labels(&[(OS_LABEL, "linux"), (ARCH_LABEL, "amd64")]),
            // Half-labelled: not a platform.
            labels(&[(ARCH_LABEL, "s390x")]),
        ];
        assert_eq!(node_platforms(nodes.iter()), ["linux/amd64", "linux/arm64"]);
    }

    #[test]
    fn digest_pinned_sources_get_every_platform() {
        let auto = CopyPlatforms::new(Platforms::Auto);
        assert!(auto.update(vec!["linux/amd64".into()]));
        assert!(!auto.update(vec!["linux/amd64".into()]), "nothing new");
        let tag = ImageRef::parse("nginx:1.27").unwrap();
        let pinned = ImageRef::parse(&format!("nginx:1.27@sha256:{}", "1".repeat(64))).unwrap();
        assert_eq!(auto.for_copy(&tag), ["linux/amd64"]);
        assert_eq!(auto.for_copy(&pinned), Vec::<String>::new());
        let all = CopyPlatforms::new(Platforms::All);
        assert_eq!(all.for_copy(&tag), Vec::<String>::new());
        // Before the nodes are known: every platform.
        assert_eq!(
            CopyPlatforms::new(Platforms::Auto).for_copy(&tag),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_platform_is_added_to_what_the_mirror_has() {
        let has = vec!["linux/amd64".to_string(), "linux/arm64/v8".to_string()];
        assert!(missing(&["linux/arm64".into(), "linux/amd64".into()], &has).is_empty());
        assert_eq!(missing(&["linux/s390x".into()], &has), ["linux/s390x"]);
        assert_eq!(
            widened(&["linux/s390x".into()], &has),
            ["linux/amd64", "linux/arm64/v8", "linux/s390x"]
        );
    }
}
