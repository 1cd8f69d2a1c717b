//! The pod webhook's I/O around the pure decision (`mutate::pods`): looks up
//! presence, the namespace's pull Secret, starts copy Jobs, and turns the
//! decision into an AdmissionResponse. Any error of ours allows the pod
//! unchanged with a warning (the webhook is `failurePolicy: Ignore`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::join_all;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::Api;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::Client;

use super::flights::Flights;
use super::gate::Gate;
use super::jobs::{self, Ensured, JobSettings};
use super::metrics::Metrics;
use super::presence::Checker;
use crate::cli::ServeArgs;
use crate::ecr::tokens::TokenCache;
use crate::mutate::pods::{candidates, decide, Decision, Facts, Outcome, Presence, Settings};
use crate::mutate::secrets::{ECR_ANYWHERE_NAMESPACE_LABEL, NAMESPACE_LABEL};
use tokio_util::sync::CancellationToken;

/// Namespace labels that enable ECR credentials (ours, and ecr-anywhere's).
const ENABLED_LABELS: [(&str, &str); 2] = [NAMESPACE_LABEL, ECR_ANYWHERE_NAMESPACE_LABEL];
/// Audit annotation (and log field) with the per-container decision.
pub const IMAGES_AUDIT_KEY: &str = "images";
/// Time limit of one copy-Job creation (DESIGN §10).
const JOB_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a namespace's pull-Secret answer is kept.
const PULL_SECRET_TTL: Duration = Duration::from_secs(30);
/// How long a created copy Job is trusted to be there without asking again.
const JOB_TTL: Duration = Duration::from_secs(30);

/// The pod webhook.
pub struct Pods {
    pub settings: Settings,
    pub client: Client,
    pub checker: Arc<Checker>,
    pub jobs: JobSettings,
    pub metrics: Arc<Metrics>,
    pub gate: Arc<Gate>,
    pub pull_secret_name: String,
    pull_secrets: Flights<Option<String>>,
}

impl Pods {
    /// Builds the pod webhook and its gate controller from serve's flags.
    pub async fn new(
        args: &ServeArgs,
        client: Client,
        metrics: Arc<Metrics>,
        tokens: Arc<TokenCache>,
    ) -> Result<Self> {
        super::setup::pods(args, client, metrics, tokens).await
    }

    /// The gate controller; returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        self.gate.clone().run(shutdown).await
    }

    pub fn from_parts(
        settings: Settings,
        client: Client,
        checker: Arc<Checker>,
        jobs: JobSettings,
        metrics: Arc<Metrics>,
        gate: Arc<Gate>,
        pull_secret_name: String,
    ) -> Self {
        Self {
            settings,
            client,
            checker,
            jobs,
            metrics,
            gate,
            pull_secret_name,
            pull_secrets: Flights::default(),
        }
    }

    /// Answers one pod admission. Never fails: our own errors allow the pod
    /// unchanged with a warning.
    pub async fn admit(&self, request: AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(&request);
        let found = candidates(&request, &self.settings);
        let checks = found.iter().map(|c| async {
            let (presence, hit) = self.checker.check(&c.target).await;
            self.metrics.presence_check(presence_label(presence), hit);
            (c.target.to_string(), presence)
        });
        let presence: HashMap<String, Presence> = join_all(checks).await.into_iter().collect();
        let pull_secret = match (&request.namespace, found.is_empty()) {
            (Some(namespace), false) => self.pull_secret(namespace).await,
            _ => None,
        };
        let decision = decide(
            &request,
            &self.settings,
            &Facts {
                presence,
                pull_secret,
            },
        );
        if let Err(err) = self.start_copies(&decision).await {
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
        if !decision.warnings.is_empty() {
            response.warnings = Some(decision.warnings);
        }
        if !summary.is_empty() {
            response
                .audit_annotations
                .insert(IMAGES_AUDIT_KEY.into(), summary);
        }
        response
    }

    async fn start_copies(&self, decision: &Decision) -> Result<()> {
        for copy in &decision.copies {
            let job = jobs::copy_job(&self.jobs, &copy.source, &copy.target);
            let name = job.metadata.name.clone().unwrap_or_default();
            let client = self.client.clone();
            let metrics = self.metrics.clone();
            let key = name.clone();
            let (result, _) = self
                .gate
                .ensured_jobs
                .get(&key, move || async move {
                    let result = match tokio::time::timeout(JOB_TIMEOUT, jobs::ensure(&client, &job)).await {
                        Ok(Ok(ensured)) => Ok(ensured),
                        Ok(Err(err)) => Err(format!("{err:#}")),
                        Err(_) => Err(format!("creating copy Job {name}: no answer within {}s", JOB_TIMEOUT.as_secs())),
                    };
                    match &result {
                        Ok(Ensured::Created | Ensured::Replaced) => {
                            metrics.copy_job_created();
                            tracing::info!(job = %name, source = %job_source(&job), "copy Job created");
                        }
                        Ok(Ensured::Running) => {}
                        Err(err) => tracing::warn!(job = %name, error = %err, "copy Job not created"),
                    }
                    let keep = if result.is_ok() { JOB_TTL } else { Duration::ZERO };
                    (result, keep)
                })
                .await;
            result.map_err(anyhow::Error::msg)?;
        }
        if decision.gated {
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
        let (answer, _) = self
            .pull_secrets
            .get(namespace, move || async move {
                match lookup_pull_secret(&client, &namespace_owned, &name).await {
                    Ok(found) => (found, PULL_SECRET_TTL),
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
                Outcome::PresenceUnknown => {
                    self.metrics.image_allowed_unchanged("presence_unknown")
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

async fn lookup_pull_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>> {
    let ns = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .with_context(|| format!("reading namespace {namespace}"))?;
    let labels = ns.and_then(|n| n.metadata.labels).unwrap_or_default();
    let enabled = ENABLED_LABELS
        .iter()
        .any(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
    if !enabled {
        return Ok(None);
    }
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(name)
        .await
        .with_context(|| format!("reading Secret {namespace}/{name}"))?;
    Ok(secret.map(|_| name.to_string()))
}

fn job_source(job: &k8s_openapi::api::batch::v1::Job) -> String {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(jobs::SOURCE_ANNOTATION).cloned())
        .unwrap_or_default()
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
