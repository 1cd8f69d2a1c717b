//! Pure image-reference logic: parsing and normalising references, and the
//! source → target naming rule. No I/O here; every function is deterministic.

use std::fmt;

mod grammar;

use crate::manifest::sha256_digest;
use anyhow::{bail, Result};

/// Docker Hub's canonical host; its aliases are folded into it.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 3] = [
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];
/// ECR's repository-name limit.
const ECR_REPOSITORY_MAX: usize = 256;
/// containerd and Docker refuse image names (host + path) longer than this.
const IMAGE_NAME_MAX: usize = 255;
/// Hex digits of the hash suffix added to names that must be shortened or escaped.
const HASH_SUFFIX_HEX: usize = 12;

/// A normalised image reference: lower-case host, Docker Hub defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io`, `127.0.0.1:5000`.
    pub host: String,
    /// Repository path, e.g. `library/nginx`.
    pub repository: String,
    /// Tag, if the reference names one (`latest` is filled in when neither tag nor digest is given).
    pub tag: Option<String>,
    /// Digest `algorithm:hex`, if the reference pins one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference such as `nginx`, `Quay.IO/org/app:1.2@sha256:…`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let normalised = lower_case_host(text);
        if normalised.starts_with('[') || normalised.contains("]:") {
            bail!("invalid image reference {text:?}: IPv6 registry hosts are not supported");
        }
        let parts = grammar::split(&normalised)
            .map_err(|why| anyhow::anyhow!("invalid image reference {text:?}: {why}"))?;
        let mut host = parts.host.unwrap_or(DOCKER_HUB).to_string();
        if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
            host = DOCKER_HUB.to_string();
        }
        let mut repository = parts.path.to_string();
        if host == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        let tag = match (parts.tag, parts.digest) {
            (None, None) => Some("latest".to_string()),
            (tag, _) => tag.map(str::to_string),
        };
        Ok(Self {
            host,
            repository,
            tag,
            digest: parts.digest.map(str::to_string),
        })
    }

    /// The repository without tag or digest: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    /// The same repository at another digest (how children of an index are addressed).
    pub fn at_digest(&self, digest: &str) -> Self {
        Self {
            tag: None,
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same repository at another tag.
    pub fn at_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// The reference oci-client speaks (it maps `docker.io` to its API host itself).
    pub fn to_oci(&self) -> oci_client::Reference {
        let (host, repo) = (self.host.clone(), self.repository.clone());
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => {
                oci_client::Reference::with_tag_and_digest(host, repo, t.clone(), d.clone())
            }
            (None, Some(d)) => oci_client::Reference::with_digest(host, repo, d.clone()),
            (Some(t), None) => oci_client::Reference::with_tag(host, repo, t.clone()),
            (None, None) => oci_client::Reference::with_tag(host, repo, "latest".to_string()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The tag that keeps a digest-only copy from counting as untagged: `sha256-<hex>`.
pub fn digest_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Lower-cases the first path component when it is a registry host
/// (contains `.` or `:`, or is `localhost`), as Docker decides hosts.
fn lower_case_host(text: &str) -> String {
    match text.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first.eq_ignore_ascii_case("localhost") =>
        {
            format!("{}/{rest}", first.to_ascii_lowercase())
        }
        _ => text.to_string(),
    }
}

/// Where mirrored images go: `REGISTRY[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRegistry {
    /// Registry host with optional port.
    pub host: String,
    /// Path prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl TargetRegistry {
    /// Parses `REGISTRY[/PREFIX]`, e.g. `123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim().trim_end_matches('/');
        let text = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(text);
        let (host, prefix) = text.split_once('/').unwrap_or((text, ""));
        if host.is_empty() || host.contains(['@', ' ']) {
            bail!("invalid target registry {text:?}: expected REGISTRY[/PREFIX]");
        }
        if !prefix.is_empty() && !is_valid_repository_name(prefix) {
            bail!(
                "invalid target prefix {prefix:?}: use lower-case letters, digits and single `.`, `_`, `-` between `/`-separated parts"
            );
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_string(),
        })
    }

    /// The naming rule: `<registry>/<prefix>/<source-host>/<path>`, tag and digest kept.
    pub fn target_reference(&self, source: &ImageRef) -> ImageRef {
        ImageRef {
            host: self.host.clone(),
            repository: self.repository_name(source),
            tag: source.tag.clone(),
            digest: source.digest.clone(),
        }
    }

    /// The target repository for a source: valid for ECR, within length limits,
    /// and never the same for two different source repositories.
    pub fn repository_name(&self, source: &ImageRef) -> String {
        let mut parts = Vec::new();
        if !self.prefix.is_empty() {
            parts.push(self.prefix.clone());
        }
        parts.push(host_component(&source.host));
        parts.push(source.repository.clone());
        let joined = parts.join("/");
        let limit = ECR_REPOSITORY_MAX.min(IMAGE_NAME_MAX.saturating_sub(self.host.len() + 1));
        if is_valid_repository_name(&joined) && joined.len() <= limit {
            return joined;
        }
        // Escaped or shortened: a hash of the exact source keeps distinct sources apart.
        let digest = sha256_digest(source.name().as_bytes());
        let hash = digest.trim_start_matches("sha256:");
        let sanitized = sanitize_repository_name(&joined);
        let keep = limit.saturating_sub(HASH_SUFFIX_HEX + 1);
        let mut head: String = sanitized.chars().take(keep).collect();
        while head.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
            head.pop();
        }
        format!("{head}-{}", &hash[..HASH_SUFFIX_HEX])
    }
}

/// Maps a registry host to one ECR-valid path component, injectively:
/// `host:5000` → `host-5000`; a host that itself ends in `-<digits>` gets that
/// last `-` written as `_` (no DNS name contains `_`), so it cannot meet a port form.
pub fn host_component(host: &str) -> String {
    if let Some((name, port)) = host.rsplit_once(':') {
        return format!("{name}-{port}");
    }
    match host.rsplit_once('-') {
        Some((name, tail)) if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}_{tail}")
        }
        _ => host.to_string(),
    }
}

/// ECR's repository-name grammar: `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`.
pub fn is_valid_repository_name(name: &str) -> bool {
    name.len() >= 2
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.split(['.', '_', '-']).all(|run| {
                    !run.is_empty()
                        && run
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
}

/// Collapses every run of separators into the first one, and drops separators
/// next to `/`, so that the result fits ECR's grammar.
fn sanitize_repository_name(name: &str) -> String {
    name.split('/')
        .map(|part| {
            let mut out = String::with_capacity(part.len());
            for c in part.chars() {
                let sep = matches!(c, '.' | '_' | '-');
                if sep && (out.is_empty() || out.ends_with(['.', '_', '-'])) {
                    continue;
                }
                if sep || c.is_ascii_lowercase() || c.is_ascii_digit() {
                    out.push(c);
                } else {
                    out.push('-');
                }
            }
            out.trim_end_matches(['.', '_', '-']).to_string()
        })
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}
