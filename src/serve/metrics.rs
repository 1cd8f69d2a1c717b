//! The `privatize_*` Prometheus metrics of `serve`: one registry, and one small
//! method per event so the handlers and the gate never touch label plumbing.

use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A labelled family that is described in every scrape, even before its
/// first sample (prometheus-client leaves empty families out), so dashboards
/// and alerts can rely on every name being there from the start.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> std::result::Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// How an admission was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with no change.
    Allowed,
    /// Allowed with a JSON Patch.
    Patched,
    /// Refused (`allowed: false`).
    Denied,
    /// The request could not be read (HTTP 4xx).
    Invalid,
    /// An internal error or the time budget ran out (answered per the path's failure policy).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

/// Every metric `serve` exports, behind small recording methods.
pub struct Metrics {
    registry: Registry,
    admissions: Family<Labels2, Counter>,
    admission_duration: HistogramFamily<Labels1>,
    images_rewritten: Counter,
    images_skipped: Family<Labels1, Counter>,
    images_allowed_unchanged: Family<Labels1, Counter>,
    pods_gated: Counter,
    pods_released: Counter,
    pods_reverted: Family<Labels1, Counter>,
    gate_wait: Histogram,
    copy_jobs_created: Counter,
    copy_jobs_succeeded: Counter,
    copy_jobs_failed: Counter,
    presence_checks: Family<Labels2, Counter>,
    tokens_fetched: Family<Labels1, Counter>,
    secrets_injected: Counter,
    certificate_expiry: Gauge,
    certificate_reloads: Family<Labels1, Counter>,
    certificate_renewals: Family<Labels1, Counter>,
    pods_refused: Counter,
    copy_jobs_deferred: Counter,
    source_checks: Family<Labels2, Counter>,
    reviews_refused: Family<Labels2, Counter>,
    review_memory: Gauge,
    credential_namespaces_forbidden: Counter,
    tags_drifted: Family<Labels1, Counter>,
    referrers_copied: Counter,
    referrers_skipped: Counter,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered (all start at zero).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("privatize");
        let admissions = Family::default();
        registry.register(
            "admissions",
            "Admission reviews answered, by path and outcome (allowed, patched, denied, invalid, error)",
            Described(admissions.clone()),
        );
        let admission_duration: HistogramFamily<Labels1> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "admission_duration",
            "Time to answer an admission review, by path",
            Unit::Seconds,
            Described(admission_duration.clone()),
        );
        let images_rewritten = Counter::default();
        registry.register(
            "images_rewritten",
            "Container images rewritten to their private copy",
            images_rewritten.clone(),
        );
        let images_skipped = Family::default();
        registry.register(
            "images_skipped",
            "Container images left alone on purpose, by reason",
            Described(images_skipped.clone()),
        );
        let images_allowed_unchanged = Family::default();
        registry.register(
            "images_allowed_unchanged",
            "Images allowed unchanged because of an error or the time budget, by reason",
            Described(images_allowed_unchanged.clone()),
        );
        let pods_gated = Counter::default();
        registry.register(
            "pods_gated",
            "Pods given the scheduling gate",
            pods_gated.clone(),
        );
        let pods_released = Counter::default();
        registry.register(
            "pods_released",
            "Gated pods released once their images landed",
            pods_released.clone(),
        );
        let pods_reverted = Family::default();
        registry.register(
            "pods_reverted",
            "Gated pods set back to their original images, by reason",
            Described(pods_reverted.clone()),
        );
        let gate_wait = Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0]);
        registry.register_with_unit(
            "gate_wait",
            "Time a pod waited at the gate before it was released or reverted",
            Unit::Seconds,
            gate_wait.clone(),
        );
        let copy_jobs_created = Counter::default();
        registry.register(
            "copy_jobs_created",
            "Copy Jobs created",
            copy_jobs_created.clone(),
        );
        let copy_jobs_succeeded = Counter::default();
        registry.register(
            "copy_jobs_succeeded",
            "Copy Jobs seen succeeding",
            copy_jobs_succeeded.clone(),
        );
        let copy_jobs_failed = Counter::default();
        registry.register(
            "copy_jobs_failed",
            "Copy Jobs seen failing for good",
            copy_jobs_failed.clone(),
        );
        let presence_checks = Family::default();
        registry.register(
            "presence_checks",
            "Checks whether an image is in the target, by result and cache (hit, miss)",
            Described(presence_checks.clone()),
        );
        let tokens_fetched = Family::default();
        registry.register(
            "ecr_tokens_fetched",
            "ECR authorization tokens fetched, by region",
            Described(tokens_fetched.clone()),
        );
        let secrets_injected = Counter::default();
        registry.register(
            "secrets_injected",
            "Managed Secrets given fresh ECR credentials",
            secrets_injected.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register_with_unit(
            "tls_certificate_expiry",
            "Time until the serving certificate expires (negative once it has)",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        let certificate_reloads = Family::default();
        registry.register(
            "tls_certificate_reloads",
            "Serving certificate loads from files, by result (loaded, rejected)",
            Described(certificate_reloads.clone()),
        );
        let certificate_renewals = Family::default();
        registry.register(
            "tls_certificate_renewals",
            "Renewals of the serving certificate in its Secret (--tls-secret), by result (renewed: this replica wrote it; lost: another replica wrote it first; failed: a look at the Secret or a write failed)",
            Described(certificate_renewals.clone()),
        );
        let pods_refused = Counter::default();
        registry.register(
            "pods_refused",
            "Pods carrying privatize's gate or labels that privatize did not write (not released, reverted or copied for)",
            pods_refused.clone(),
        );
        let copy_jobs_deferred = Counter::default();
        registry.register(
            "copy_jobs_deferred",
            "Copy Jobs wanted but held back by the running-Job caps (total or per namespace)",
            copy_jobs_deferred.clone(),
        );
        let referrers_copied = Counter::default();
        registry.register(
            "referrers_copied",
            "Referrers (signatures, attestations, SBOMs) copy Jobs brought along or found in place, from their summaries",
            referrers_copied.clone(),
        );
        let referrers_skipped = Counter::default();
        registry.register(
            "referrers_skipped",
            "Referrers copy Jobs could not copy or list (each also a warning in the Job's log)",
            referrers_skipped.clone(),
        );
        let tags_drifted = Family::default();
        registry.register(
            "tags_drifted",
            "Admissions of a mirrored tag whose source tag now points elsewhere, by what was done (warned, synced: a copy Job moves the mirror's tag)",
            Described(tags_drifted.clone()),
        );
        let source_checks = Family::default();
        registry.register(
            "source_checks",
            "Checks whether a source can be read anonymously, by result (public, private, unknown) and cache (hit, miss)",
            Described(source_checks.clone()),
        );
        let reviews_refused = Family::default();
        registry.register(
            "reviews_refused",
            "Admission reviews refused for memory, by path and reason (budget: 429, the review memory budget was in use; over-budget: 413, the review alone would need more than the budget; too-large: 413, over 3 MiB)",
            Described(reviews_refused.clone()),
        );
        let review_memory = Gauge::default();
        registry.register_with_unit(
            "review_memory",
            "Memory held by admission reviews in flight, as charged to --review-memory-budget (request bytes, then the parsed review)",
            Unit::Bytes,
            review_memory.clone(),
        );
        let credential_namespaces_forbidden = Counter::default();
        registry.register(
            "credential_namespaces_forbidden",
            "Namespaces labelled for ECR credentials whose Secrets privatize may not read (no RoleBinding of privatize-credentials)",
            credential_namespaces_forbidden.clone(),
        );
        Self {
            registry,
            admissions,
            admission_duration,
            images_rewritten,
            images_skipped,
            images_allowed_unchanged,
            pods_gated,
            pods_released,
            pods_reverted,
            gate_wait,
            copy_jobs_created,
            copy_jobs_succeeded,
            copy_jobs_failed,
            presence_checks,
            tokens_fetched,
            secrets_injected,
            certificate_expiry,
            certificate_reloads,
            certificate_renewals,
            pods_refused,
            copy_jobs_deferred,
            source_checks,
            reviews_refused,
            review_memory,
            credential_namespaces_forbidden,
            tags_drifted,
            referrers_copied,
            referrers_skipped,
        }
    }

    /// Prometheus (OpenMetrics) text of every family.
    pub fn encode(&self) -> Result<String> {
        let mut text = String::new();
        encode(&mut text, &self.registry).context("encoding metrics")?;
        Ok(text)
    }

    /// One admission answered on `path` (e.g. `/mutate/pods`).
    pub fn admission(&self, path: &str, outcome: Outcome, elapsed: Duration) {
        self.admissions
            .get_or_create(&[
                ("path", path.to_string()),
                ("outcome", outcome.as_str().to_string()),
            ])
            .inc();
        self.admission_duration
            .get_or_create(&[("path", path.to_string())])
            .observe(elapsed.as_secs_f64());
    }

    /// A container image rewritten to its private copy.
    pub fn image_rewritten(&self) {
        self.images_rewritten.inc();
    }

    /// An image left alone on purpose (`excluded`, `target`, `namespace`, `annotation`, ...).
    pub fn image_skipped(&self, reason: &str) {
        self.images_skipped
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    /// An image allowed unchanged because something failed (`budget`, `presence`, `job`, ...).
    pub fn image_allowed_unchanged(&self, reason: &str) {
        self.images_allowed_unchanged
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
    }

    /// A pod got the scheduling gate.
    pub fn pod_gated(&self) {
        self.pods_gated.inc();
    }

    /// A gated pod was released after waiting `waited`.
    pub fn pod_released(&self, waited: Duration) {
        self.pods_released.inc();
        self.gate_wait.observe(waited.as_secs_f64());
    }

    /// A gated pod was set back to its original images (`job-failed`, `gate-timeout`, ...).
    pub fn pod_reverted(&self, reason: &str, waited: Duration) {
        self.pods_reverted
            .get_or_create(&[("reason", reason.to_string())])
            .inc();
        self.gate_wait.observe(waited.as_secs_f64());
    }

    /// A copy Job was created (AlreadyExists does not count).
    pub fn copy_job_created(&self) {
        self.copy_jobs_created.inc();
    }

    /// A copy Job was seen succeeding.
    pub fn copy_job_succeeded(&self) {
        self.copy_jobs_succeeded.inc();
    }

    /// A copy Job was seen failing for good.
    pub fn copy_job_failed(&self) {
        self.copy_jobs_failed.inc();
    }

    /// A presence check of an image in the target: `result` is `present`, `missing` or `error`.
    pub fn presence_check(&self, result: &str, cache_hit: bool) {
        let cache = if cache_hit { "hit" } else { "miss" };
        self.presence_checks
            .get_or_create(&[("result", result.to_string()), ("cache", cache.to_string())])
            .inc();
    }

    /// An ECR authorization token fetched for `region`.
    pub fn token_fetched(&self, region: &str) {
        self.tokens_fetched
            .get_or_create(&[("region", region.to_string())])
            .inc();
    }

    /// A managed Secret got fresh credentials.
    pub fn secret_injected(&self) {
        self.secrets_injected.inc();
    }

    /// Seconds until the serving certificate expires (negative when it has).
    pub fn set_certificate_expiry(&self, seconds_left: i64) {
        self.certificate_expiry.set(seconds_left);
    }

    /// A pod carried privatize's marks without a record privatize would write.
    pub fn pod_refused(&self) {
        self.pods_refused.inc();
    }

    /// A wanted copy Job was held back by a cap.
    pub fn copy_job_deferred(&self) {
        self.copy_jobs_deferred.inc();
    }

    /// A copy Job's referrer counts.
    pub fn referrers(&self, copied: u64, skipped: u64) {
        self.referrers_copied.inc_by(copied);
        self.referrers_skipped.inc_by(skipped);
    }

    /// A drifted tag admitted: `warned` or `synced`.
    pub fn tag_drifted(&self, done: &str) {
        self.tags_drifted
            .get_or_create(&[("done", done.to_string())])
            .inc();
    }

    /// An anonymous-access check of a source: `public`, `private` or `unknown`.
    pub fn source_check(&self, result: &str, cache_hit: bool) {
        let cache = if cache_hit { "hit" } else { "miss" };
        self.source_checks
            .get_or_create(&[("result", result.to_string()), ("cache", cache.to_string())])
            .inc();
    }

    /// A labelled namespace turned out to be one privatize may not read Secrets in.
    pub fn credential_namespace_forbidden(&self) {
        self.credential_namespaces_forbidden.inc();
    }

    /// A certificate pair read from files: `loaded` or `rejected`.
    pub fn certificate_reload(&self, result: &str) {
        self.certificate_reloads
            .get_or_create(&[("result", result.to_string())])
            .inc();
    }

    /// A renewal of the serving certificate: `renewed`, `lost` or `failed`.
    pub fn certificate_renewal(&self, result: &str) {
        self.certificate_renewals
            .get_or_create(&[("result", result.to_string())])
            .inc();
    }

    /// A review refused for memory on `path`: `budget`, `over-budget` or `too-large`.
    pub fn review_refused(&self, path: &str, reason: &str) {
        self.reviews_refused
            .get_or_create(&[("path", path.to_string()), ("reason", reason.to_string())])
            .inc();
    }

    /// Review memory taken (positive) or given back (negative).
    pub fn review_memory_held(&self, delta: i64) {
        self.review_memory.inc_by(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_counted_by_path_and_outcome() {
        let metrics = Metrics::new();
        metrics.admission("/mutate/pods", Outcome::Patched, Duration::from_millis(30));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"privatize_admissions_total{path="/mutate/pods",outcome="patched"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"privatize_admission_duration_seconds_count{path="/mutate/pods"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn empty_families_are_still_described() {
        let text = Metrics::new().encode().unwrap();
        assert!(
            text.contains("# TYPE privatize_pods_reverted counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE privatize_gate_wait_seconds histogram"),
            "{text}"
        );
    }
}
