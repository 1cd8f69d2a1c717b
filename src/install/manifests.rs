//! Pure: every object `install` applies, built as typed k8s-openapi structs
//! from the settings (a misspelt field does not compile). No I/O;
//! `install --dry-run` prints exactly these. Callers find objects by kind and name.

mod config;
mod policies;
mod rbac;

pub use rbac::CREDENTIALS_ROLE;
pub use workloads::OWNED_ENV;
mod webhook;
mod workloads;

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::k8s::{Object, MANAGED_BY};

/// Name of the Deployment, Service, PDB and webhook configuration.
pub const NAME: &str = "privatize";
/// The TLS Secret the server mounts.
pub const TLS_SECRET: &str = "privatize-tls";
/// The CronJob that runs `refresh-secrets`.
pub const REFRESH_CRON_JOB: &str = "privatize-refresh-secrets";
/// Service accounts: the webhook server, the copy Jobs (the seed's default name), the CronJob.
pub const SERVER_ACCOUNT: &str = "privatize-webhook";
pub const COPY_JOB_ACCOUNT: &str = "privatize";
pub const REFRESH_ACCOUNT: &str = "privatize-refresh";
/// Names of the admission webhooks.
pub const POD_WEBHOOK: &str = "pods.privatize.io";
pub const SECRET_WEBHOOK: &str = "secrets.privatize.io";
pub const LEGACY_SECRET_WEBHOOK: &str = "ecr-anywhere-secrets.privatize.io";
/// Opt-in labels for ECR credentials (ours, and ecr-anywhere's).
pub const NAMESPACE_LABEL: (&str, &str) = ("privatize.io/ecr-credentials", "enabled");
pub const SECRET_LABEL: (&str, &str) = ("privatize.io/ecr-credentials", "managed");
pub const LEGACY_NAMESPACE_LABEL: (&str, &str) = ("ecr-anywhere.centml.ai/namespace", "enabled");
pub const LEGACY_SECRET_LABEL: (&str, &str) = ("ecr-anywhere.centml.ai/managed", "true");

/// What the manifests depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub image: String,
    /// Base URL registered instead of the Service.
    pub webhook_url: Option<String>,
    pub target_registry: Option<String>,
    /// Annotations of each ServiceAccount: one identity per job (DESIGN §11).
    pub annotations: AccountAnnotations,
    /// KMS key for new ECR repositories (serve's `PRIVATIZE_KMS_KEY`).
    pub kms_key: Option<String>,
    /// A dockerconfigjson Secret in the namespace that copy Jobs mount (source credentials).
    pub source_credentials_secret: Option<String>,
    /// PEM CA bundle for the webhooks' `caBundle` (one CA, or two during a
    /// rotation); `None` renders none (gen-certs patches it in).
    pub ca_bundle: Option<String>,
    /// Replicas of the webhook server (a PodDisruptionBudget only above 1).
    pub replicas: i32,
    /// The copy-Job pod template's text (validated), for its ConfigMap.
    pub copy_job_pod_template: Option<String>,
    /// Extra CA certificates for registries (PEM), for the CA ConfigMap.
    pub registry_ca: Option<String>,
    /// Namespaces where privatize may read and write managed Secrets
    /// (RoleBindings of `privatize-credentials`); `*` binds it cluster-wide.
    pub credential_namespaces: Vec<String>,
    /// Extra env of serve's container (`--env`), in the order given.
    pub server_env: Vec<(String, String)>,
    /// A Secret with serve's AWS keys (`--aws-credentials-secret`).
    pub aws_credentials_secret: Option<String>,
    /// Namespaces (globs) whose pods are never rewritten, the install
    /// namespace among them (serve's `PRIVATIZE_EXCLUDE_NAMESPACES`).
    pub exclude_namespaces: Vec<String>,
    /// Platforms the copy Jobs copy (serve's `PRIVATIZE_PLATFORMS`, set when
    /// not `all`): `all`, `auto` (serve then watches Nodes, and only then gets
    /// the right to) or OS/ARCH[/VARIANT],... as given.
    pub platforms: String,
}

/// The annotations of each of privatize's ServiceAccounts (e.g. an IRSA role):
/// serve's, the copy Jobs' and the CronJob's, each its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountAnnotations {
    /// `SERVER_ACCOUNT`: serve, pull-only.
    pub webhook: BTreeMap<String, String>,
    /// `COPY_JOB_ACCOUNT`: the copy Jobs, push.
    pub copy_job: BTreeMap<String, String>,
    /// `REFRESH_ACCOUNT`: the CronJob, no AWS identity.
    pub refresh: BTreeMap<String, String>,
}

impl AccountAnnotations {
    /// Each account with its annotations, in render order.
    pub fn by_account(&self) -> [(&'static str, &BTreeMap<String, String>); 3] {
        [
            (SERVER_ACCOUNT, &self.webhook),
            (COPY_JOB_ACCOUNT, &self.copy_job),
            (REFRESH_ACCOUNT, &self.refresh),
        ]
    }
}

/// Every object, in a sensible apply order (a PodDisruptionBudget only for
/// more than one replica, the ConfigMaps only when set). `install` and `uninstall` do not
/// rely on the order: they pick the Namespace and the webhook configuration
/// out by kind and name.
pub fn objects(s: &Settings) -> Result<Vec<Object>> {
    let mut out = vec![Object::new(&namespace(s))?];
    for (account, annotations) in s.annotations.by_account() {
        out.push(Object::new(&service_account(s, account, annotations))?);
    }
    out.extend(rbac::objects(s)?);
    out.extend(policies::objects(s)?);
    for config_map in config::config_maps(s) {
        out.push(Object::new(&config_map)?);
    }
    out.push(Object::new(&workloads::service(s))?);
    out.push(Object::new(&workloads::deployment(s))?);
    if s.replicas > 1 {
        out.push(Object::new(&workloads::disruption_budget(s))?);
    }
    out.push(Object::new(&workloads::refresh_cron_job(s))?);
    out.push(Object::new(&webhook::configuration(s))?);
    Ok(out)
}

/// Objects earlier versions installed and this one does not: install and
/// uninstall delete them (when privatize manages them), so an upgrade keeps
/// no rights it no longer grants.
pub fn retired(s: &Settings) -> Result<Vec<Object>> {
    let mut out = rbac::retired(s)?;
    for config_map in config::unused_config_maps(s) {
        out.push(Object::new(&config_map)?);
    }
    if s.replicas <= 1 {
        // One replica must stay drainable; none needs no budget.
        out.push(Object::new(&workloads::disruption_budget(s))?);
    }
    Ok(out)
}

fn labels() -> BTreeMap<String, String> {
    string_map([
        ("app.kubernetes.io/name", "privatize"),
        ("app.kubernetes.io/part-of", "privatize"),
        MANAGED_BY,
    ])
}

/// Labels of a pod template: the object labels plus its component.
fn pod_labels(component: &str) -> BTreeMap<String, String> {
    let mut labels = labels();
    labels.insert("app.kubernetes.io/component".into(), component.into());
    labels
}

/// Selects the webhook server's pods (Service, Deployment, PDB, anti-affinity).
fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(string_map([
            ("app.kubernetes.io/name", "privatize"),
            ("app.kubernetes.io/component", "webhook"),
        ])),
        ..Default::default()
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(labels()),
        ..Default::default()
    }
}

fn namespace(s: &Settings) -> Namespace {
    Namespace {
        metadata: meta(&s.namespace, None),
        ..Default::default()
    }
}

fn service_account(
    s: &Settings,
    name: &str,
    annotations: &BTreeMap<String, String>,
) -> ServiceAccount {
    let mut metadata = meta(name, Some(&s.namespace));
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations.clone());
    }
    ServiceAccount {
        metadata,
        ..Default::default()
    }
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.into_iter().map(String::from).collect()
}

fn string_map<const N: usize>(items: [(&str, &str); N]) -> BTreeMap<String, String> {
    items
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
