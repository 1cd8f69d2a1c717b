//! Which images a pod admission leaves alone, and why: placeholders, images already
//! in the target, the exclude list (registries or reference globs), the include allowlist.

use std::fmt;

use super::glob_match;
use crate::image::{ImageRef, TargetRegistry};

/// Bare words that stand for an image to be filled in later and name no real image:
/// Istio's gateway injection writes `image: auto`. They are left alone.
pub const PLACEHOLDER_IMAGES: &[&str] = &["auto"];

/// The default `PRIVATIZE_EXCLUDE`: registries a copy Job cannot reach as the node
/// does (the node's own loopback, in-cluster Services). Setting the list replaces it.
pub fn default_exclude() -> Vec<String> {
    [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "*.svc",
        "*.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec()
}

/// Why an image is left as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// Not a valid image reference (the parse error).
    Unparsable(String),
    /// Empty, or a placeholder such as Istio's `auto`.
    Placeholder,
    /// Already in the target registry.
    InTarget,
    /// Matched this entry of the exclude list.
    Excluded(String),
    /// The include allowlist is set and names no registry of this image.
    NotIncluded,
    /// It cannot be read anonymously, and the pod's namespace may not mirror
    /// private sources (`PRIVATIZE_PRIVATE_SOURCE_NAMESPACES`).
    PrivateSource,
    /// `PRIVATIZE_REQUIRE_PULL_SECRET` and the pod's namespace has no managed
    /// pull Secret (not enabled for ECR credentials): the node could not pull the copy.
    NoPullSecret,
}

impl LeaveReason {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unparsable(_) => "unparsable",
            Self::Placeholder => "placeholder",
            Self::InTarget => "in_target",
            Self::Excluded(_) => "excluded",
            Self::NotIncluded => "not_included",
            Self::PrivateSource => "private-source",
            Self::NoPullSecret => "no_pull_secret",
        }
    }
}

impl fmt::Display for LeaveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparsable(why) => write!(f, "unparsable: {why}"),
            Self::Placeholder => f.write_str("placeholder, no image"),
            Self::InTarget => f.write_str("already in the target registry"),
            Self::Excluded(entry) => write!(f, "excluded by {entry:?}"),
            Self::NotIncluded => f.write_str("registry not in the include list"),
            Self::PrivateSource => f.write_str(
                "the source cannot be read anonymously and this namespace may not mirror private images",
            ),
            Self::NoPullSecret => f.write_str(
                "the namespace has no managed pull Secret, so its nodes could not pull the copy",
            ),
        }
    }
}

/// An image to mirror, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Mirror `source` to `target`.
    Mirror { source: ImageRef, target: ImageRef },
    /// Leave the image as written.
    Leave(LeaveReason),
}

/// Decides whether one image reference, as written in the pod, is mirrored.
///
/// `exclude` and `include` entries are either a registry `HOST[:PORT]` (without a
/// port: that host on any port; `*` globs allowed, e.g. `*.svc`) or, when they
/// contain `/`, a glob over the normalised reference (`docker.io/library/*`),
/// matched against both `host/path:tag@digest` and `host/path`.
pub fn select(
    image: &str,
    target: &TargetRegistry,
    exclude: &[String],
    include: &[String],
) -> Selection {
    let written = image.trim();
    if written.is_empty() || PLACEHOLDER_IMAGES.contains(&written) {
        return Selection::Leave(LeaveReason::Placeholder);
    }
    // The host as written first: IPv6 hosts such as `[::1]:5000` never parse.
    if let Some(host) = written_host(written) {
        if let Some(reason) = leave_by_host(&host, target, exclude) {
            return Selection::Leave(reason);
        }
    }
    let source = match ImageRef::parse(written) {
        Ok(source) => source,
        Err(err) => return Selection::Leave(LeaveReason::Unparsable(format!("{err:#}"))),
    };
    if let Some(reason) = leave_by_host(&source.host, target, exclude) {
        return Selection::Leave(reason);
    }
    let (full, name) = (source.to_string(), source.name());
    if let Some(entry) = exclude
        .iter()
        .find(|e| is_reference_glob(e) && reference_matches(e, &full, &name))
    {
        return Selection::Leave(LeaveReason::Excluded(entry.clone()));
    }
    let included = |e: &String| {
        if is_reference_glob(e) {
            reference_matches(e, &full, &name)
        } else {
            registry_matches(e, &source.host)
        }
    };
    if include.iter().any(|e| !e.trim().is_empty()) && !include.iter().any(included) {
        return Selection::Leave(LeaveReason::NotIncluded);
    }
    let target = target.target_reference(&source);
    Selection::Mirror { source, target }
}

/// In the target (any port when the target names none), or excluded as a registry.
fn leave_by_host(host: &str, target: &TargetRegistry, exclude: &[String]) -> Option<LeaveReason> {
    if registry_matches(&target.host, host) {
        return Some(LeaveReason::InTarget);
    }
    exclude
        .iter()
        .find(|e| !is_reference_glob(e) && registry_matches(e, host))
        .map(|e| LeaveReason::Excluded(e.clone()))
}

/// The registry host as written, lower-cased, when the reference names one (Docker's
/// rule: the first component contains `.` or `:`, is `localhost`, or is bracketed IPv6).
fn written_host(image: &str) -> Option<String> {
    let (first, _) = image.split_once('/')?;
    let is_host = first.starts_with('[')
        || first.contains(['.', ':'])
        || first.eq_ignore_ascii_case("localhost");
    is_host.then(|| first.to_ascii_lowercase())
}

fn is_reference_glob(entry: &str) -> bool {
    clean_entry(entry).contains('/')
}

/// An entry without surrounding blanks, scheme or trailing `/`.
fn clean_entry(entry: &str) -> &str {
    let entry = entry.trim();
    let entry = entry
        .strip_prefix("https://")
        .or_else(|| entry.strip_prefix("http://"))
        .unwrap_or(entry);
    entry.trim_end_matches('/')
}

fn reference_matches(entry: &str, full: &str, name: &str) -> bool {
    let entry = clean_entry(entry);
    glob_match(entry, full) || glob_match(entry, name)
}

/// `HOST[:PORT]` pattern against a host: the names must match (globs allowed), and
/// the ports too when the pattern names one.
pub(crate) fn registry_matches(pattern: &str, host: &str) -> bool {
    let pattern = clean_entry(pattern);
    if pattern.is_empty() {
        return false;
    }
    let (pattern_name, pattern_port) = split_port(pattern);
    let (name, port) = split_port(host);
    glob_match(&bracket_ipv6(pattern_name), name)
        && match pattern_port {
            None => true,
            Some(pattern_port) => port.is_some_and(|port| glob_match(pattern_port, port)),
        }
}

/// `host:5000` → (`host`, `5000`); `[::1]:5000` → (`[::1]`, `5000`); an unbracketed
/// IPv6 address (`::1`) is all name.
fn split_port(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => {
                let (name, rest) = host.split_at(end + 1);
                (name, rest.strip_prefix(':'))
            }
            None => (host, None),
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

/// `::1` in a pattern means `[::1]`, the form references use.
fn bracket_ipv6(name: &str) -> String {
    if name.contains(':') && !name.starts_with('[') {
        format!("[{name}]")
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_without_port_matches_every_port() {
        assert!(registry_matches("localhost", "localhost"));
        assert!(registry_matches("localhost", "localhost:5000"));
        assert!(registry_matches("[::1]", "[::1]:5000"));
        assert!(registry_matches("::1", "[::1]:5000"));
        assert!(registry_matches("*.svc", "foo.ns.svc:5000"));
        assert!(!registry_matches("*.svc", "foo.svc.cluster.local"));
        assert!(!registry_matches("127.0.0.1", "127.0.0.10:5000"));
    }

    #[test]
    fn registry_with_port_matches_that_port_only() {
        assert!(registry_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!registry_matches("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(!registry_matches("127.0.0.1:5000", "127.0.0.1"));
        assert!(registry_matches("[::1]:5000", "[::1]:5000"));
        assert!(!registry_matches("[::1]:5000", "[::1]"));
        assert!(registry_matches("https://Quay.io/", "quay.io"));
        assert!(!registry_matches("", "quay.io"));
        assert!(!registry_matches("[", "quay.io"));
    }

    #[test]
    fn written_host_follows_dockers_rule() {
        assert_eq!(written_host("nginx"), None);
        assert_eq!(written_host("library/nginx"), None);
        assert_eq!(written_host("LocalHost/x").as_deref(), Some("localhost"));
        assert_eq!(written_host("[::1]:5000/x").as_deref(), Some("[::1]:5000"));
        assert_eq!(written_host("Quay.io/a/b").as_deref(), Some("quay.io"));
    }
}
