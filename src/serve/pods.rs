//! The pod webhook's I/O around the pure decision (`mutate::pods`): looks up
//! presence, anonymous access to sources where private sources are not
//! allowed, the namespace's pull Secret, starts an ephemeral container's
//! copy (other copies start in the gate controller, once the pod exists), and
//! turns the decision into an AdmissionResponse. Any error of ours allows the
//! pod unchanged with a warning (the webhook is `failurePolicy: Ignore`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::Client;

mod pass;
mod tags;

use super::credentials::Credentials;
use super::drift::Drifts;
use super::flights::Flights;
use super::gate::Gate;
use super::jobs::{admit_copies, JobSettings, Running};
use super::metrics::Metrics;
use super::presence::Checker;
use super::sources::Sources;
use crate::cli::ServeArgs;
use crate::ecr::tokens::TokenCache;
use crate::mutate::pods::{
    candidates, decide, Access, Decision, Facts, Outcome, Presence, Settings,
};
use crate::mutate::secrets::{ECR_ANYWHERE_NAMESPACE_LABEL, NAMESPACE_LABEL};
use tokio_util::sync::CancellationToken;

/// Namespace labels that enable ECR credentials (ours, and ecr-anywhere's).
const ENABLED_LABELS: [(&str, &str); 2] = [NAMESPACE_LABEL, ECR_ANYWHERE_NAMESPACE_LABEL];
/// Audit annotation (and log field) with the per-container decision.
pub const IMAGES_AUDIT_KEY: &str = "images";
/// How long a namespace's pull-Secret answer is kept.
const PULL_SECRET_TTL: Duration = Duration::from_secs(30);
/// How long "enabled, but no pull Secret yet" is remembered: briefly, so a
/// pod created right after `refresh-secrets --ensure` (or its owner) made
/// the Secret gets it (a pod admitted without it could never pull).
const PULL_SECRET_MISSING_TTL: Duration = Duration::from_secs(1);
/// Registry lookups (presence, anonymous access) one admission runs at once;
/// the image cap per pod bounds how many there are.
const LOOKUP_CONCURRENCY: usize = 8;

/// The pod webhook.
pub struct Pods {
    pub settings: Settings,
    pub client: Client,
    pub checker: Arc<Checker>,
    pub sources: Arc<Sources>,
    pub jobs: JobSettings,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub pull_secret_name: String,
    /// Creates a missing pull Secret where `--require-pull-secret` needs one.
    pub credentials: Arc<Credentials>,
    pull_secrets: Flights<Option<String>>,
    /// `--tag-drift` checks; `None` under `ignore`.
    drifts: Option<Arc<Drifts>>,
    /// How often the pass over the tags in use runs (`--tag-recheck-interval`).
    recheck_interval: Duration,
}

impl Pods {
    /// Builds the pod webhook and its gate controller from serve's flags.
    pub async fn new(
        args: &ServeArgs,
        client: Client,
        metrics: Arc<Metrics>,
        tokens: Arc<TokenCache>,
        credentials: Arc<Credentials>,
    ) -> Result<Self> {
        super::setup::pods(args, client, metrics, tokens, credentials).await
    }

    /// The gate controller, the Node watch of `--platforms auto` and the pass
    /// over the tags in use; returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let platforms = self.gate.config.platforms.clone();
        let nodes = tokio::spawn(platforms.run(self.client.clone(), shutdown.clone()));
        let passes = tokio::spawn(self.clone().passes(shutdown.clone()));
        let gate = self.gate.clone().run(shutdown).await;
        passes.abort();
        nodes.abort();
        gate
    }

    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        settings: Settings,
        client: Client,
        checker: Arc<Checker>,
        sources: Arc<Sources>,
        jobs: JobSettings,
        metrics: Arc<Metrics>,
        gate: Arc<Gate>,
        pull_secret_name: String,
        credentials: Arc<Credentials>,
    ) -> Self {
        Self {
            settings,
            client,
            checker,
            sources,
            jobs,
            metrics,
            gate,
            pull_secret_name,
            credentials,
            pull_secrets: Flights::default(),
            drifts: None,
            recheck_interval: Duration::from_secs(3600),
        }
    }

    /// With `--tag-drift` checks (`None`: `ignore`) and the pass's interval.
    pub fn with_drifts(mut self, drifts: Option<Arc<Drifts>>, interval: Duration) -> Self {
        self.drifts = drifts;
        self.recheck_interval = interval;
        self
    }

    /// Answers one pod admission. Never fails: our own errors allow the pod
    /// unchanged with a warning.
    pub async fn admit(&self, request: AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(&request);
        let found = candidates(&request, &self.settings);
        // Futures built in a loop, not in a stream closure: rustc cannot
        // prove such closures' futures Send (rust-lang/rust#102211).
        let mut presence_checks = Vec::new();
        let mut access_checks = Vec::new();
        for c in &found {
            let (checker, metrics, target) =
                (self.checker.clone(), self.metrics.clone(), c.target.clone());
            presence_checks.push(async move {
                let (presence, digest, hit) = checker.check_digest(&target).await;
                metrics.presence_check(presence_label(presence), hit);
                (target.to_string(), (presence, digest))
            });
            if c.check_access {
                let (sources, source) = (self.sources.clone(), c.source.clone());
                access_checks
                    .push(async move { (source.to_string(), sources.access(&source).await) });
            }
        }
        let probed: Vec<(String, (Presence, Option<String>))> = stream::iter(presence_checks)
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        let digests: HashMap<String, String> = probed
            .iter()
            .filter_map(|(target, (_, digest))| Some((target.clone(), digest.clone()?)))
            .collect();
        let presence: HashMap<String, Presence> = probed
            .into_iter()
            .map(|(target, (presence, _))| (target, presence))
            .collect();
        let access: HashMap<String, Access> = stream::iter(access_checks)
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        let pull_secret = match (&request.namespace, found.is_empty()) {
            (Some(namespace), false) => self.pull_secret(namespace).await,
            _ => None,
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        // Boxed: its futures (registry reads, a copy Job's API calls) would
        // otherwise sit in this one, which debug builds copy on the stack.
        let drift_warnings = Box::pin(self.follow_tags(
            &found,
            |target| {
                presence
                    .get(&target.to_string())
                    .copied()
                    .unwrap_or(Presence::Unknown)
            },
            &namespace,
        ))
        .await;
        let decision = decide(
            &request,
            &self.settings,
            &Facts {
                presence,
                pull_secret,
                access,
                digests,
            },
        );
        if let Err(err) = self.start_copies(&decision, &namespace).await {
            return self.unchanged(response, "job", format!("{err:#}"));
        }
        self.count(&decision);
        let summary = images_summary(&decision);
        let mut response = if decision.patch.is_empty() {
            response
        } else {
            match response
                .clone()
                .with_patch(json_patch::Patch(decision.patch))
            {
                Ok(patched) => patched,
                Err(err) => return self.unchanged(response, "patch", err.to_string()),
            }
        };
        let mut warnings = decision.warnings;
        warnings.extend(drift_warnings);
        if !warnings.is_empty() {
            response.warnings = Some(warnings);
        }
        if !summary.is_empty() {
            response
                .audit_annotations
                .insert(IMAGES_AUDIT_KEY.into(), summary);
        }
        response
    }

    /// Starts an ephemeral container's copy (its pod exists already), within
    /// the caps: over them, the copy waits for a later debug session. Nudges
    /// the gate controller, which starts every other pod's copies.
    async fn start_copies(&self, decision: &Decision, namespace: &str) -> Result<()> {
        if !decision.copies.is_empty() {
            let platforms: Vec<Vec<String>> = decision
                .copies
                .iter()
                .map(|c| self.gate.config.platforms.for_copy(&c.source))
                .collect();
            let wanted: Vec<(String, String)> = decision
                .copies
                .iter()
                .zip(&platforms)
                .map(|(c, p)| {
                    let job = super::jobs::job_name(&c.source, &c.target, p);
                    (namespace.to_string(), job)
                })
                .collect();
            let running = Running::of(self.gate.job_store.state().iter().map(|j| j.as_ref()));
            let admitted = admit_copies(&wanted, &running, self.gate.config.caps);
            for _ in admitted.len()..wanted.len() {
                self.metrics.copy_job_deferred();
            }
            for i in admitted {
                let copy = &decision.copies[i];
                self.gate
                    .ensure_copy(&copy.source, &copy.target, &platforms[i], namespace)
                    .await
                    .map_err(anyhow::Error::msg)?;
            }
        }
        if decision.gated || decision.copy_pending {
            // The copy may already be done (another pod's Job): let the gate look.
            self.gate.nudge.notify_one();
        }
        Ok(())
    }

    /// The managed pull Secret's name when the namespace is enabled for ECR
    /// credentials and the Secret exists there.
    async fn pull_secret(&self, namespace: &str) -> Option<String> {
        let client = self.client.clone();
        let (namespace_owned, name) = (namespace.to_string(), self.pull_secret_name.clone());
        // Where rewriting needs the Secret, a missing one is created (logins written).
        let create = self
            .settings
            .require_pull_secret
            .then(|| self.credentials.clone());
        let (answer, _) = self
            .pull_secrets
            .get(namespace, move || async move {
                match lookup_pull_secret(&client, &namespace_owned, &name, create.as_deref()).await {
                    Ok(Lookup::Found(found)) => (Some(found), PULL_SECRET_TTL),
                    Ok(Lookup::NotEnabled) => (None, PULL_SECRET_TTL),
                    Ok(Lookup::Missing) => (None, PULL_SECRET_MISSING_TTL),
                    Err(err) => {
                        tracing::warn!(namespace = %namespace_owned, error = %format!("{err:#}"), "looking up the managed pull Secret");
                        (None, Duration::ZERO)
                    }
                }
            })
            .await;
        answer
    }

    fn count(&self, decision: &Decision) {
        for image in &decision.images {
            match &image.outcome {
                outcome if outcome.rewrites() => self.metrics.image_rewritten(),
                Outcome::PresenceUnknown | Outcome::SourceUnknown => {
                    self.metrics.image_allowed_unchanged(image.outcome.label())
                }
                outcome => self.metrics.image_skipped(outcome.label()),
            }
        }
        if decision.gated && !self.settings.dry_run {
            self.metrics.pod_gated();
        }
    }

    fn unchanged(
        &self,
        response: AdmissionResponse,
        reason: &str,
        why: String,
    ) -> AdmissionResponse {
        self.metrics.image_allowed_unchanged(reason);
        tracing::warn!(reason, error = %why, "pod allowed unchanged");
        let mut response = response;
        response.warnings = Some(vec![format!(
            "privatize: pod allowed unchanged ({reason}): {why}"
        )]);
        response
    }
}

/// What a namespace has for the managed pull Secret.
enum Lookup {
    /// The Secret, by name.
    Found(String),
    /// Not enabled for ECR credentials, or privatize may not read its Secrets.
    NotEnabled,
    /// Enabled, and no Secret (yet).
    Missing,
}

/// The managed pull Secret's name when `namespace` is enabled for ECR
/// credentials and the Secret is there (created through `create`, when given,
/// if it is missing). Where privatize may not read Secrets (no RoleBinding of
/// `privatize-credentials`), there is none.
async fn lookup_pull_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    create: Option<&Credentials>,
) -> Result<Lookup> {
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .with_context(|| format!("reading namespace {namespace}"))?;
    let labels = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
    let enabled = ENABLED_LABELS
        .iter()
        .any(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
    if !enabled {
        return Ok(Lookup::NotEnabled);
    }
    let secret = match Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(name)
        .await
    {
        Ok(secret) => secret,
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Lookup::NotEnabled),
        Err(err) => return Err(err).with_context(|| format!("reading Secret {namespace}/{name}")),
    };
    let found = match (secret, create) {
        (Some(_), _) => true,
        (None, Some(credentials)) => credentials.create_pull_secret(namespace, name).await?,
        (None, None) => false,
    };
    Ok(if found {
        Lookup::Found(name.to_string())
    } else {
        Lookup::Missing
    })
}

fn presence_label(presence: Presence) -> &'static str {
    match presence {
        Presence::Present => "present",
        Presence::Missing => "missing",
        Presence::Unknown => "unknown",
    }
}

/// The per-container decision, for the admission's log line (the HTTP
/// layer writes it) and the apiserver's audit log (as an audit annotation,
/// prefixed there with the webhook's name).
fn images_summary(decision: &Decision) -> String {
    let images: Vec<String> = decision
        .images
        .iter()
        .map(|i| match &i.target {
            Some(target) if i.outcome.rewrites() => {
                format!(
                    "{}: {} -> {} ({})",
                    i.container,
                    i.original,
                    target,
                    i.outcome.label()
                )
            }
            _ => format!("{}: {} ({})", i.container, i.original, i.outcome.label()),
        })
        .collect();
    match &decision.skipped {
        Some(reason) => format!("skipped: {}", reason.label()),
        None => images.join("; "),
    }
}
