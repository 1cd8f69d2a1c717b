//! Pure: every object `install` applies, as typed k8s-openapi objects built
//! from the settings. No I/O; `install --dry-run` prints exactly these.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::k8s::{Object, MANAGED_BY};

/// Name of the Deployment, Service, PDB and webhook configuration.
pub const NAME: &str = "privatize";
/// The TLS Secret the server mounts.
pub const TLS_SECRET: &str = "privatize-tls";
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
const NON_ROOT_UID: i64 = 65532;

/// What the manifests depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub image: String,
    /// Base URL registered instead of the Service.
    pub webhook_url: Option<String>,
    pub target_registry: Option<String>,
    pub service_account_annotations: BTreeMap<String, String>,
    /// PEM CA for the webhooks' `caBundle`; `None` renders none (gen-certs patches it in).
    pub ca_pem: Option<String>,
}

/// Every object, in apply order: the webhook configuration last, so it never
/// points at a server that is not there yet.
pub fn objects(s: &Settings) -> Result<Vec<Object>> {
    let mut out = vec![cluster(namespace(s)?)?];
    for account in [SERVER_ACCOUNT, COPY_JOB_ACCOUNT, REFRESH_ACCOUNT] {
        out.push(namespaced(service_account(s, account)?)?);
    }
    for (name, rules) in cluster_roles() {
        out.push(cluster(typed::<ClusterRole>(
            json!({"metadata": meta(name, None), "rules": rules}),
        )?)?);
        let account = match name {
            "privatize-webhook" => SERVER_ACCOUNT,
            "privatize-copy-job" => COPY_JOB_ACCOUNT,
            _ => REFRESH_ACCOUNT,
        };
        out.push(cluster(typed::<ClusterRoleBinding>(json!({
            "metadata": meta(name, None),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": s.namespace}]
        }))?)?);
    }
    out.push(namespaced(typed::<Role>(json!({
        "metadata": meta("privatize-webhook-jobs", Some(&s.namespace)),
        "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch"]}]
    }))?)?);
    out.push(namespaced(typed::<RoleBinding>(json!({
        "metadata": meta("privatize-webhook-jobs", Some(&s.namespace)),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "privatize-webhook-jobs"},
        "subjects": [{"kind": "ServiceAccount", "name": SERVER_ACCOUNT, "namespace": s.namespace}]
    }))?)?);
    out.push(namespaced(service(s)?)?);
    out.push(namespaced(deployment(s)?)?);
    out.push(namespaced(typed::<PodDisruptionBudget>(json!({
        "metadata": meta(NAME, Some(&s.namespace)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector()}}
    }))?)?);
    out.push(namespaced(cron_job(s)?)?);
    out.push(cluster(webhook_configuration(s)?)?);
    Ok(out)
}

fn typed<K: DeserializeOwned>(value: Value) -> Result<K> {
    serde_json::from_value(value).context("building a manifest")
}

fn namespaced<K>(value: K) -> Result<Object>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    Object::new(&value, true)
}

fn cluster<K>(value: K) -> Result<Object>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    Object::new(&value, false)
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": "privatize", "app.kubernetes.io/part-of": "privatize", MANAGED_BY.0: MANAGED_BY.1})
}

fn selector() -> Value {
    json!({"app.kubernetes.io/name": "privatize", "app.kubernetes.io/component": "webhook"})
}

fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        m["namespace"] = ns.into();
    }
    m
}

fn namespace(s: &Settings) -> Result<Namespace> {
    typed(json!({"metadata": meta(&s.namespace, None)}))
}

fn service_account(s: &Settings, name: &str) -> Result<ServiceAccount> {
    let mut m = meta(name, Some(&s.namespace));
    if !s.service_account_annotations.is_empty() {
        m["annotations"] = json!(s.service_account_annotations);
    }
    typed(json!({"metadata": m}))
}

/// Least privilege: each identity gets only the verbs its role uses.
pub fn cluster_roles() -> Vec<(&'static str, Value)> {
    vec![
        (
            "privatize-webhook",
            json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["privatize-ecr"], "verbs": ["get"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
            ]),
        ),
        (
            "privatize-copy-job",
            json!([
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}
            ]),
        ),
        (
            "privatize-refresh",
            json!([
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "patch"]}
            ]),
        ),
    ]
}

fn service(s: &Settings) -> Result<Service> {
    typed(json!({
        "metadata": meta(NAME, Some(&s.namespace)),
        "spec": {
            "selector": selector(),
            "ports": [
                {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
                {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
            ]
        }
    }))
}

fn pod_security() -> Value {
    json!({"runAsNonRoot": true, "runAsUser": NON_ROOT_UID, "runAsGroup": NON_ROOT_UID, "seccompProfile": {"type": "RuntimeDefault"}})
}

fn container_security() -> Value {
    json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}})
}

fn deployment(s: &Settings) -> Result<Deployment> {
    let mut env = vec![
        json!({"name": "COPY_JOB_NAMESPACE", "value": s.namespace}),
        json!({"name": "COPY_JOB_IMAGE", "value": s.image}),
        json!({"name": "COPY_JOB_SERVICE_ACCOUNT_NAME", "value": COPY_JOB_ACCOUNT}),
        json!({"name": "PRIVATIZE_EXCLUDE_NAMESPACES", "value": format!("kube-system,{}", s.namespace)}),
        json!({"name": "PRIVATIZE_LOG_FORMAT", "value": "json"}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
    ];
    if let Some(registry) = &s.target_registry {
        env.push(json!({"name": "ECR_REGISTRY", "value": registry}));
    }
    let mut pod_labels = labels();
    pod_labels["app.kubernetes.io/component"] = "webhook".into();
    typed(json!({
        "metadata": meta(NAME, Some(&s.namespace)),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": SERVER_ACCOUNT,
                    "securityContext": pod_security(),
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": selector()}}
                    }]}},
                    "containers": [{
                        "name": "privatize",
                        "image": s.image,
                        "args": ["serve"],
                        "ports": [{"name": "https", "containerPort": 8443}, {"name": "http", "containerPort": 8080}],
                        "env": env,
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "securityContext": container_security(),
                        "volumeMounts": [{"name": "tls", "mountPath": "/etc/privatize/tls", "readOnly": true}]
                    }],
                    "volumes": [{"name": "tls", "secret": {"secretName": TLS_SECRET}}]
                }
            }
        }
    }))
}

fn cron_job(s: &Settings) -> Result<CronJob> {
    let mut job_labels = labels();
    job_labels["app.kubernetes.io/component"] = "refresh-secrets".into();
    typed(json!({
        "metadata": meta("privatize-refresh-secrets", Some(&s.namespace)),
        "spec": {
            "schedule": "0 * * * *",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": 1,
                "activeDeadlineSeconds": 600,
                "template": {
                    "metadata": {"labels": job_labels},
                    "spec": {
                        "serviceAccountName": REFRESH_ACCOUNT,
                        "restartPolicy": "Never",
                        "securityContext": pod_security(),
                        "containers": [{
                            "name": "refresh-secrets",
                            "image": s.image,
                            "args": ["refresh-secrets", "--ensure"],
                            "env": [{"name": "PRIVATIZE_LOG_FORMAT", "value": "json"}],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                            "securityContext": container_security()
                        }]
                    }
                }
            }}
        }
    }))
}

fn client_config(s: &Settings, path: &str) -> Value {
    let mut config = match &s.webhook_url {
        Some(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/'))}),
        None => {
            json!({"service": {"namespace": s.namespace, "name": NAME, "path": path, "port": 443}})
        }
    };
    if let Some(ca) = &s.ca_pem {
        config["caBundle"] = base64::engine::general_purpose::STANDARD.encode(ca).into();
    }
    config
}

fn not_ours(s: &Settings) -> Value {
    json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [s.namespace]})
}

fn webhook_configuration(s: &Settings) -> Result<MutatingWebhookConfiguration> {
    let common = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": client_config(s, path),
            "admissionReviewVersions": ["v1", "v1beta1"],
            "reinvocationPolicy": "IfNeeded",
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10
        })
    };
    let mut pods = common(POD_WEBHOOK, "/mutate/pods");
    pods["failurePolicy"] = "Ignore".into();
    pods["sideEffects"] = "NoneOnDryRun".into();
    pods["rules"] = json!([
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"},
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"}
    ]);
    pods["namespaceSelector"] = json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", s.namespace]}
    ]});
    let secrets = |name: &str, ns_label: (&str, &str), secret_label: (&str, &str)| {
        let mut hook = common(name, "/mutate/secrets");
        hook["failurePolicy"] = "Fail".into();
        hook["sideEffects"] = "None".into();
        hook["rules"] = json!([
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"], "scope": "Namespaced"}
        ]);
        hook["namespaceSelector"] = json!({
            "matchLabels": {ns_label.0: ns_label.1},
            "matchExpressions": [not_ours(s)]
        });
        hook["objectSelector"] = json!({"matchLabels": {secret_label.0: secret_label.1}});
        hook
    };
    typed(json!({
        "metadata": meta(NAME, None),
        "webhooks": [
            pods,
            secrets(SECRET_WEBHOOK, NAMESPACE_LABEL, SECRET_LABEL),
            secrets(LEGACY_SECRET_WEBHOOK, LEGACY_NAMESPACE_LABEL, LEGACY_SECRET_LABEL)
        ]
    }))
}
