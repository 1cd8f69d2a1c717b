//! What a pod admission decision says: per-image outcomes, the copies to start, the
//! patch, and why a pod was skipped. Plain data for logs, metrics and the I/O layer.

use std::fmt;

use json_patch::PatchOperation;

use super::record::SKIP_ANNOTATION;
use super::select::LeaveReason;
use crate::image::ImageRef;

/// Where a container sits in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `spec.containers`
    Container,
    /// `spec.initContainers` (native sidecars included)
    Init,
    /// `spec.ephemeralContainers`
    Ephemeral,
}

impl ContainerKind {
    /// The pod spec field holding this kind of container.
    pub fn field(self) -> &'static str {
        match self {
            Self::Container => "containers",
            Self::Init => "initContainers",
            Self::Ephemeral => "ephemeralContainers",
        }
    }
}

/// An image whose presence in the target the I/O layer must look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The (first) container using the image.
    pub container: String,
    /// The normalised source reference.
    pub source: ImageRef,
    /// Where the naming rule puts it; `target.to_string()` keys [`Facts::presence`](super::pods::Facts::presence).
    pub target: ImageRef,
    /// The reference as written in the pod.
    pub original: String,
    /// Where the container sits.
    pub kind: ContainerKind,
    /// Whether the I/O layer must also ask if the source can be read
    /// anonymously (private sources are not allowed in the pod's namespace).
    pub check_access: bool,
}

/// What happened to one container's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Present in the target: rewritten, no gate.
    Rewritten,
    /// Missing (policy `gate`): rewritten, and the pod waits at the gate for the copy.
    Gated,
    /// Missing (policy `always`): rewritten at once; a pull may fail until the copy lands.
    RewrittenBeforeCopy,
    /// Missing: the original is kept while the copy runs (policy `exists`, or an
    /// ephemeral container, which cannot wait at a gate).
    KeptUntilCopied,
    /// Present, but in an ephemeral container of a running pod that lacks the managed
    /// pull Secret (it cannot be added now), so the node could not pull the copy.
    KeptNoPullSecret,
    /// Some image's presence is unknown: the whole pod is allowed unchanged.
    PresenceUnknown,
    /// Whether some source can be read anonymously is unknown (where private
    /// sources are not allowed): the whole pod is allowed unchanged.
    SourceUnknown,
    /// Not mirrored at all.
    LeftAlone(LeaveReason),
}

impl Outcome {
    /// A short, fixed label for metrics (the leave reason's label when left alone).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Rewritten => "rewritten",
            Self::Gated => "gated",
            Self::RewrittenBeforeCopy => "rewritten_before_copy",
            Self::KeptUntilCopied => "kept_until_copied",
            Self::KeptNoPullSecret => "kept_no_pull_secret",
            Self::PresenceUnknown => "presence_unknown",
            Self::SourceUnknown => "source_unknown",
            Self::LeftAlone(reason) => reason.label(),
        }
    }

    /// Whether the container's image is (or would be) set to the target reference.
    pub fn rewrites(&self) -> bool {
        matches!(
            self,
            Self::Rewritten | Self::Gated | Self::RewrittenBeforeCopy
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rewritten => f.write_str("rewritten, present in the target"),
            Self::Gated => f.write_str("rewritten and gated until the copy lands"),
            Self::RewrittenBeforeCopy => f.write_str("rewritten before the copy lands"),
            Self::KeptUntilCopied => f.write_str("original kept until the copy lands"),
            Self::KeptNoPullSecret => f.write_str("original kept: the pod lacks the pull secret"),
            Self::PresenceUnknown => f.write_str("unchanged: presence in the target unknown"),
            Self::SourceUnknown => {
                f.write_str("unchanged: whether the source can be read anonymously is unknown")
            }
            Self::LeftAlone(reason) => write!(f, "left alone: {reason}"),
        }
    }
}

/// One container's image in a decision, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOutcome {
    /// Container name.
    pub container: String,
    /// Where the container sits.
    pub kind: ContainerKind,
    /// The reference as written in the pod.
    pub original: String,
    /// The target reference, for images that were not left alone.
    pub target: Option<ImageRef>,
    /// What happened.
    pub outcome: Outcome,
}

/// A copy to start (one Job per target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCopy {
    /// The normalised source reference.
    pub source: ImageRef,
    /// The target reference.
    pub target: ImageRef,
}

/// Why a whole admission was answered unchanged without looking at images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The namespace matched this `exclude_namespaces` glob.
    NamespaceExcluded(String),
    /// The pod is annotated `privatize.io/skip: "true"`.
    Annotated,
    /// An operation other than Pod CREATE or UPDATE of `pods/ephemeralcontainers`
    /// (e.g. `UPDATE`, `UPDATE pods/status`, `DELETE`).
    Operation(String),
    /// The request carries no object (or, on UPDATE, no old object).
    NoObject,
    /// More distinct images to mirror than `PRIVATIZE_MAX_IMAGES_PER_POD`.
    TooManyImages { count: usize, max: usize },
}

impl SkipReason {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NamespaceExcluded(_) => "namespace_excluded",
            Self::Annotated => "skip_annotation",
            Self::Operation(_) => "operation",
            Self::NoObject => "no_object",
            Self::TooManyImages { .. } => "too_many_images",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NamespaceExcluded(glob) => write!(f, "namespace excluded by {glob:?}"),
            Self::Annotated => write!(f, "annotated {SKIP_ANNOTATION}: \"true\""),
            Self::Operation(op) => write!(f, "{op} is answered unchanged"),
            Self::NoObject => f.write_str("request without the pod object"),
            Self::TooManyImages { count, max } => write!(
                f,
                "{count} distinct images to mirror, over the limit of {max} per pod"
            ),
        }
    }
}

/// The answer to one pod admission.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// JSON Patch against the request object; empty means unchanged.
    pub patch: Vec<PatchOperation>,
    /// Every container image looked at, with its outcome (empty when skipped).
    pub images: Vec<ImageOutcome>,
    /// Copies to start now, one per target: only an ephemeral container's
    /// (its pod exists already); other pods' copies are started by the gate
    /// controller once the pod exists. Empty on dry runs.
    pub copies: Vec<ImageCopy>,
    /// Whether the pod waits (or, on a dry run, would wait) at the gate.
    pub gated: bool,
    /// Whether the pod is not gated but an image of it is still to be copied
    /// (labelled `privatize.io/copy-pending` so the gate controller starts it).
    pub copy_pending: bool,
    /// Set when the whole pod was skipped, with why.
    pub skipped: Option<SkipReason>,
    /// Messages for the API client and the log (invalid images, unknown presence).
    pub warnings: Vec<String>,
}
