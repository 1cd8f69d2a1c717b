//! What a pod admission decision is made from besides the request: the settings,
//! and the facts the I/O layer looked up (presence in the target, whether a
//! source can be read anonymously, the pull Secret).

use std::collections::HashMap;

use crate::cli::SwapPolicy;
use crate::image::{ImageRef, TargetRegistry};

/// The `serve` settings a pod decision depends on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where mirrored images go.
    pub target: TargetRegistry,
    /// What a pod whose image is not mirrored yet gets.
    pub swap_policy: SwapPolicy,
    /// The effective `PRIVATIZE_EXCLUDE`: registries (`HOST[:PORT]`, globs) or, with a
    /// `/`, reference globs. Use [`super::select::default_exclude`] when the user set none.
    /// The target is excluded whatever this says.
    pub exclude: Vec<String>,
    /// Namespace globs whose pods are never touched.
    pub exclude_namespaces: Vec<String>,
    /// When not empty, only images from these registries (same syntax as `exclude`).
    pub include_registries: Vec<String>,
    /// `PRIVATIZE_DRY_RUN`: decide and report, but patch nothing and copy nothing.
    pub dry_run: bool,
    /// Namespace globs whose pods may have images mirrored that cannot be read
    /// anonymously (`PRIVATIZE_PRIVATE_SOURCE_NAMESPACES`); empty: none.
    pub private_source_namespaces: Vec<String>,
    /// Distinct images to mirror one pod may have; a pod with more is left unchanged.
    pub max_images_per_pod: usize,
    /// `PRIVATIZE_REQUIRE_PULL_SECRET`: rewrite a pod only where its node can
    /// pull the copy, i.e. when the managed pull Secret is there (the pod's
    /// namespace enabled for ECR credentials).
    pub require_pull_secret: bool,
    /// `PRIVATIZE_PIN_DIGESTS`: a tag rewritten to a copy that is there
    /// becomes `target:tag@sha256:…` of that copy (every replica the same bytes).
    pub pin_digests: bool,
}

impl Settings {
    /// Settings with the defaults of `serve`: policy `gate`, the default exclude
    /// list, no excluded namespace, no allowlist, not a dry run.
    pub fn new(target: TargetRegistry) -> Self {
        Self {
            target,
            swap_policy: SwapPolicy::Gate,
            exclude: super::select::default_exclude(),
            exclude_namespaces: Vec::new(),
            include_registries: Vec::new(),
            dry_run: false,
            private_source_namespaces: Vec::new(),
            max_images_per_pod: DEFAULT_MAX_IMAGES_PER_POD,
            require_pull_secret: false,
            pin_digests: false,
        }
    }

    /// Whether pods of `namespace` may have images mirrored that anonymous
    /// clients cannot read (the installation's source credentials would copy
    /// them into a registry every namespace pulls from).
    pub fn private_sources_allowed(&self, namespace: &str) -> bool {
        self.private_source_namespaces
            .iter()
            .map(|glob| glob.trim())
            .any(|glob| !glob.is_empty() && super::glob_match(glob, namespace))
    }
}

/// The default of `PRIVATIZE_MAX_IMAGES_PER_POD`.
pub const DEFAULT_MAX_IMAGES_PER_POD: usize = 32;

/// Whether a source can be read with no credentials (a manifest HEAD through
/// the anonymous token flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone may pull it.
    Public,
    /// Refused (or not found) without credentials.
    Private,
    /// No answer (timeout, error, budget spent).
    Unknown,
}

/// Whether a target reference exists in the target registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The manifest is there.
    Present,
    /// The registry said it is not there.
    Missing,
    /// No answer (timeout, error, budget spent).
    Unknown,
}

/// What the I/O layer looked up for one admission.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Presence per target reference (`ImageRef::to_string()` of the target); a
    /// reference absent from the map counts as [`Presence::Unknown`].
    pub presence: HashMap<String, Presence>,
    /// The managed pull Secret's name, when the pod's namespace is enabled for ECR
    /// credentials and the Secret exists there.
    pub pull_secret: Option<String>,
    /// Anonymous access per source reference (`ImageRef::to_string()` of the
    /// source), looked up only where private sources are not allowed; a source
    /// absent from the map counts as [`Access::Unknown`] there.
    pub access: HashMap<String, Access>,
    /// The digest each present target reference points at (`--pin-digests`).
    pub digests: HashMap<String, String>,
}

impl Facts {
    /// The presence of one target reference (unknown when not looked up).
    pub fn presence_of(&self, target: &ImageRef) -> Presence {
        self.presence
            .get(&target.to_string())
            .copied()
            .unwrap_or(Presence::Unknown)
    }

    /// Anonymous access to one source (unknown when not looked up).
    pub fn access_of(&self, source: &ImageRef) -> Access {
        self.access
            .get(&source.to_string())
            .copied()
            .unwrap_or(Access::Unknown)
    }
}
