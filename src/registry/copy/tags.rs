//! Pure: which target tags a copy may move (DESIGN §11, "a shared tag only
//! moves to what the source tag is now"), decided from what the source tag and
//! the target tags hold when they were last read, and the repository's tag
//! mutability. The copy reads, this decides, the copy pushes. No I/O here.

use crate::image::{digest_tag, ImageRef};

/// How many images one copy follows a source tag through when it moves
/// under the copy (the first copy included) before it gives up.
pub const MAX_ROUNDS: usize = 3;
/// How much of a registry's refusal message is kept for the error line.
const REFUSAL_MESSAGE_MAX: usize = 300;

/// The tags one copy deals with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPlan {
    /// Whether the source pins a digest: then the named tag is moved only
    /// when the source tag points at that digest, and otherwise left.
    pub pinned: bool,
    /// Whether the copied digest is anchored by a `sha256-<hex>` tag (the
    /// reference pins a digest), so lifecycle rules for untagged images spare it.
    pub anchored: bool,
    /// The target tag that mirrors a tag.
    pub named: Option<String>,
    /// The source tag the named tag mirrors; `None` for a digest-only source
    /// (then the named tag is one the caller asked for with `--target`).
    pub source_tag: Option<String>,
}

impl TagPlan {
    pub fn new(source: &ImageRef, target: &ImageRef) -> Self {
        Self {
            pinned: source.digest.is_some(),
            anchored: source.digest.is_some() || target.digest.is_some(),
            named: target.tag.clone(),
            source_tag: target.tag.as_ref().and(source.tag.clone()),
        }
    }

    /// The anchor tag of `digest`, when the plan has one.
    pub fn anchor(&self, digest: &str) -> Option<String> {
        self.anchored.then(|| digest_tag(digest))
    }
}

/// A target repository's tag mutability, as ECR reports it. Other registries
/// are `Mutable` here: they enforce their own rules, and a refused push is
/// read with [`tag_refusal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Mutability {
    #[default]
    Mutable,
    Immutable,
    /// `IMMUTABLE_WITH_EXCLUSION`: immutable but for tags matching these wildcards.
    ImmutableExcept(Vec<String>),
    /// `MUTABLE_WITH_EXCLUSION`: mutable but for tags matching these wildcards.
    MutableExcept(Vec<String>),
}

impl Mutability {
    /// Whether `tag`, once it exists, can never point elsewhere.
    pub fn is_immutable(&self, tag: &str) -> bool {
        match self {
            Self::Mutable => false,
            Self::Immutable => true,
            Self::ImmutableExcept(filters) => !filters.iter().any(|f| wildcard_match(f, tag)),
            Self::MutableExcept(filters) => filters.iter().any(|f| wildcard_match(f, tag)),
        }
    }

    /// ECR's name for the setting.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mutable => "MUTABLE",
            Self::Immutable => "IMMUTABLE",
            Self::ImmutableExcept(_) => "IMMUTABLE_WITH_EXCLUSION",
            Self::MutableExcept(_) => "MUTABLE_WITH_EXCLUSION",
        }
    }
}

/// ECR's exclusion-filter wildcard: `*` is any run of characters, everything
/// else literal and case-sensitive (tags are).
fn wildcard_match(pattern: &str, tag: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = tag.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// What the source tag resolved to when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTag {
    /// The plan mirrors no source tag (digest-only source).
    Untagged,
    /// Not read (the target tag already held the digest). A tag is never
    /// moved on an unread source tag.
    Unread,
    /// The source has no such tag now.
    Gone,
    /// The source tag points at this digest.
    At(String),
}

/// What one target tag gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagAction {
    /// Move (or create) the tag to the digest.
    Push,
    /// It already points at the digest: nothing to do.
    Holds,
    /// Not moved, and why.
    Leave(Left),
    /// It points elsewhere and may not move.
    Conflict(TagConflict),
}

/// Why a named tag is not moved to the digest copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Left {
    /// The source tag points at another digest now.
    SourceMoved(String),
    /// The source has no such tag any more.
    SourceGone,
    /// The source tag was not read.
    Unverified,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SourceMoved(now) => write!(f, "source tag now points at {now}"),
            Self::SourceGone => write!(f, "source tag no longer exists"),
            Self::Unverified => write!(f, "source tag not verified"),
        }
    }
}

/// A tag that exists with another digest in a repository whose tags are immutable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tag {tag} holds {holds}, not {wanted}, and cannot be moved: the repository's tags are {mutability}"
)]
pub struct TagConflict {
    pub tag: String,
    pub holds: String,
    pub wanted: String,
    pub mutability: &'static str,
}

/// The anchor tag `sha256-<hex>` of `digest`: it names its digest, so it is
/// always pushed; one already holding the digest is nothing to do (never a conflict).
pub fn anchor_action(
    tag: &str,
    digest: &str,
    target_now: Option<&str>,
    mutability: &Mutability,
) -> TagAction {
    target_action(tag, digest, target_now, mutability)
}

/// The named tag: moved to `digest` (copied from `source_digest`) only when
/// the source tag points at `source_digest` now. A digest-only source's named
/// tag (asked for with `--target`) is pushed as asked.
pub fn named_action(
    tag: &str,
    source_digest: &str,
    digest: &str,
    source_now: &SourceTag,
    target_now: Option<&str>,
    mutability: &Mutability,
) -> TagAction {
    if target_now == Some(digest) {
        return TagAction::Holds;
    }
    match source_now {
        SourceTag::Untagged => {}
        SourceTag::At(now) if now == source_digest => {}
        SourceTag::At(now) => return TagAction::Leave(Left::SourceMoved(now.clone())),
        SourceTag::Gone => return TagAction::Leave(Left::SourceGone),
        SourceTag::Unread => return TagAction::Leave(Left::Unverified),
    }
    target_action(tag, digest, target_now, mutability)
}

fn target_action(
    tag: &str,
    digest: &str,
    target_now: Option<&str>,
    mutability: &Mutability,
) -> TagAction {
    match target_now {
        Some(now) if now == digest => TagAction::Holds,
        Some(now) if mutability.is_immutable(tag) => TagAction::Conflict(TagConflict {
            tag: tag.to_string(),
            holds: now.to_string(),
            wanted: digest.to_string(),
            mutability: mutability.name(),
        }),
        _ => TagAction::Push,
    }
}

/// What the copy does next about the named tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Nothing more: the tag is where it may be.
    Done,
    /// Copy the image the source tag points at now, then decide again.
    Follow(String),
    /// Stop with an error.
    Fail(Stuck),
}

/// Why a named tag could not be brought to what the source tag is now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stuck {
    #[error("source tag {tag} kept moving during the copy ({rounds} images copied, it now points at {now}): target tag {tag} not moved")]
    KeptMoving {
        tag: String,
        rounds: usize,
        now: String,
    },
    #[error("source tag {tag} no longer exists: target tag {tag} not moved")]
    Gone { tag: String },
}

/// Where a copy that left its named tag goes. `pursuing`: the copy is to
/// bring the tag to what the source tag is now (a plain `repo:tag`, or a
/// pinned reference whose tag this copy has already moved); a pinned
/// reference whose source tag points elsewhere just leaves the tag.
/// `rounds`: images copied so far.
pub fn after_leave(tag: &str, left: &Left, pursuing: bool, pinned: bool, rounds: usize) -> Next {
    match left {
        Left::SourceMoved(now) if pursuing => follow(tag, now, rounds),
        Left::SourceGone if pursuing && !pinned => Next::Fail(Stuck::Gone {
            tag: tag.to_string(),
        }),
        _ => Next::Done,
    }
}

/// Where a copy goes once it moved its named tag to what it copied from
/// `source_digest`, given the source tag read again after the push: a tag
/// that the source moved on from meanwhile is taken on to the new image, so
/// the last copy to finish leaves the tag where the source tag is.
pub fn after_push(tag: &str, source_digest: &str, source_now: &SourceTag, rounds: usize) -> Next {
    match source_now {
        SourceTag::At(now) if now != source_digest => follow(tag, now, rounds),
        _ => Next::Done,
    }
}

fn follow(tag: &str, now: &str, rounds: usize) -> Next {
    if rounds >= MAX_ROUNDS {
        return Next::Fail(Stuck::KeptMoving {
            tag: tag.to_string(),
            rounds,
            now: now.to_string(),
        });
    }
    Next::Follow(now.to_string())
}

/// A registry's refusal of a tag push, read from its error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The registry's error code (`TAG_INVALID`, ...), or the HTTP status.
    pub code: String,
    /// Its message, on one line and shortened.
    pub message: String,
    /// Whether it says the tag is immutable.
    pub immutable: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{}: {}", self.code, self.message)
        }
    }
}

/// A tag push the registry refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TagRefused {
    pub tag: String,
    pub wanted: String,
    /// What the tag points at after the refusal, when it could be read.
    pub holds: Option<String>,
    pub refusal: Refusal,
}

impl std::fmt::Display for TagRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            tag,
            wanted,
            holds,
            refusal,
        } = self;
        write!(f, "the registry refused to move tag {tag} to {wanted}")?;
        if let Some(holds) = holds {
            write!(f, " (it holds {holds})")?;
        }
        if refusal.immutable {
            write!(f, ": the tag is IMMUTABLE there ({refusal})")
        } else {
            write!(f, ": {refusal}")
        }
    }
}

/// Reads a refused manifest push (a 4xx answer and its OCI error body). ECR
/// answers a push onto an existing immutable tag with 400 `TAG_INVALID`
/// ("... cannot be overwritten because the repository is immutable");
/// other registries say `TAG_IMMUTABLE` or name immutability in the message.
pub fn tag_refusal(status: u16, body: &str) -> Option<Refusal> {
    if !(400..500).contains(&status) || status == 401 || status == 429 {
        return None;
    }
    let envelope: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let first = envelope
        .as_ref()
        .and_then(|e| e.get("errors"))
        .and_then(|e| e.as_array())
        .and_then(|e| e.first());
    let text = |key: &str| {
        first
            .and_then(|e| e.get(key))
            .and_then(|v| v.as_str())
            .map(one_line)
    };
    let code = text("code").unwrap_or_else(|| format!("HTTP {status}"));
    let message = text("message").unwrap_or_default();
    let immutable = code == "TAG_IMMUTABLE" || message.to_ascii_lowercase().contains("immutable");
    Some(Refusal {
        code,
        message,
        immutable,
    })
}

/// Collapses whitespace (a registry's text must not break the one-line error) and shortens.
fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(REFUSAL_MESSAGE_MAX) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
#[path = "tags_tests.rs"]
mod tests;
