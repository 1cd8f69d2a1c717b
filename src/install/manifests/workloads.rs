//! The webhook server (Deployment, Service, PodDisruptionBudget) and the
//! `refresh-secrets` CronJob: non-root, read-only, with requests and probes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    meta, pod_labels, selector, strings, Settings, COPY_JOB_ACCOUNT, NAME, REFRESH_ACCOUNT,
    REFRESH_CRON_JOB, SERVER_ACCOUNT, TLS_SECRET,
};

const NON_ROOT_UID: i64 = 65532;
/// Where the server reads its certificate (the TLS Secret, mounted); serve's
/// default --tls-cert-path and --tls-key-path point here.
const TLS_MOUNT: &str = "/etc/privatize/tls";
/// The server's container: serve finds its own image under this name.
const SERVER_CONTAINER: &str = "privatize";
/// Above serve's default shutdown delay (5s, /readyz failing before the
/// listeners close) plus its shutdown timeout (20s, requests in flight).
const TERMINATION_GRACE_SECONDS: i64 = 30;

pub(super) fn service(s: &Settings) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    Service {
        metadata: meta(NAME, Some(&s.namespace)),
        spec: Some(ServiceSpec {
            selector: selector().match_labels,
            ports: Some(vec![port("https", 443), port("http", 8080)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Seconds a new serve replica is Ready before the rollout moves on.
const MIN_READY_SECONDS: i32 = 5;

pub(super) fn deployment(s: &Settings) -> Deployment {
    let mut env = vec![
        env_value("COPY_JOB_NAMESPACE", &s.namespace),
        env_value("COPY_JOB_IMAGE", &s.image),
        env_value("COPY_JOB_SERVICE_ACCOUNT_NAME", COPY_JOB_ACCOUNT),
        env_value(
            "PRIVATIZE_EXCLUDE_NAMESPACES",
            &s.exclude_namespaces.join(","),
        ),
        env_value("PRIVATIZE_LOG_FORMAT", "json"),
        env_field("POD_NAME", "metadata.name"),
        env_field("POD_NAMESPACE", "metadata.namespace"),
        // serve renews the certificate in the Secret it mounts (serve/renew.rs).
        env_value("PRIVATIZE_TLS_SECRET", TLS_SECRET),
    ];
    if let Some(registry) = &s.target_registry {
        env.push(env_value("ECR_REGISTRY", registry));
    }
    if let Some(secret) = &s.source_credentials_secret {
        env.push(env_value("PRIVATIZE_SOURCE_CREDENTIALS_SECRET", secret));
    }
    if let Some(key) = &s.kms_key {
        env.push(env_value("PRIVATIZE_KMS_KEY", key));
    }
    if s.platforms != "all" {
        env.push(env_value("PRIVATIZE_PLATFORMS", &s.platforms));
    }
    let (config_env, config_volumes, config_mounts) = super::config::server_wiring(s);
    env.extend(config_env);
    if let Some(secret) = &s.aws_credentials_secret {
        env.extend(aws_keys(secret));
    }
    env.extend(s.server_env.iter().map(|(k, v)| env_value(k, v)));
    let probe = |path: &str, period: i32, failure_threshold: Option<i32>| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold,
        ..Default::default()
    };
    let port = |name: &str, container_port: i32| ContainerPort {
        name: Some(name.into()),
        container_port,
        ..Default::default()
    };
    let server = Container {
        name: SERVER_CONTAINER.into(),
        image: Some(s.image.clone()),
        args: Some(strings(["serve"])),
        ports: Some(vec![port("https", 8443), port("http", 8080)]),
        env: Some(env),
        readiness_probe: Some(probe("/readyz", 5, None)),
        liveness_probe: Some(probe("/healthz", 10, Some(3))),
        resources: Some(resources("50m", "64Mi", "256Mi")),
        security_context: Some(container_security()),
        volume_mounts: Some(
            [VolumeMount {
                name: "tls".into(),
                mount_path: TLS_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            }]
            .into_iter()
            .chain(config_mounts)
            .collect(),
        ),
        ..Default::default()
    };
    let spread = WeightedPodAffinityTerm {
        weight: 100,
        pod_affinity_term: PodAffinityTerm {
            topology_key: "kubernetes.io/hostname".into(),
            label_selector: Some(selector()),
            ..Default::default()
        },
    };
    Deployment {
        metadata: meta(NAME, Some(&s.namespace)),
        spec: Some(DeploymentSpec {
            replicas: Some(s.replicas),
            selector: selector(),
            // A new replica counts as available (and an old one is stopped) only
            // after it has been Ready this long: the Service's endpoints and
            // kube-proxy's rules have caught up by then, so the apiserver always
            // has a serving endpoint to call during a rollout (seen without it: one
            // admission in 1,200 failed open with 503 under load).
            min_ready_seconds: Some(MIN_READY_SECONDS),
            // Never below two serving replicas during a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels("webhook")),
                    annotations: super::config::config_hash(s).map(|kv| BTreeMap::from([kv])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(SERVER_ACCOUNT.into()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    security_context: Some(pod_security()),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                spread,
                            ]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![server],
                    volumes: Some(
                        [Volume {
                            name: "tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(TLS_SECRET.into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]
                        .into_iter()
                        .chain(config_volumes)
                        .collect(),
                    ),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn disruption_budget(s: &Settings) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(NAME, Some(&s.namespace)),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(selector()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn refresh_cron_job(s: &Settings) -> CronJob {
    let container = Container {
        name: "refresh-secrets".into(),
        image: Some(s.image.clone()),
        args: Some(strings(["refresh-secrets", "--ensure"])),
        env: Some(vec![env_value("PRIVATIZE_LOG_FORMAT", "json")]),
        resources: Some(resources("10m", "32Mi", "128Mi")),
        security_context: Some(container_security()),
        ..Default::default()
    };
    CronJob {
        metadata: meta(REFRESH_CRON_JOB, Some(&s.namespace)),
        spec: Some(CronJobSpec {
            schedule: "0 * * * *".into(),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(1),
                    active_deadline_seconds: Some(600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels("refresh-secrets")),
                            ..Default::default()
                        }),
                        spec: Some(PodSpec {
                            service_account_name: Some(REFRESH_ACCOUNT.into()),
                            restart_policy: Some("Never".into()),
                            security_context: Some(pod_security()),
                            containers: vec![container],
                            ..Default::default()
                        }),
                    },
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// serve's AWS keys from a Secret (the chart's `aws.existingSecret`).
fn aws_keys(secret: &str) -> Vec<EnvVar> {
    let key = |name: &str, optional: bool| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: name.into(),
                optional: optional.then_some(true),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        key("AWS_ACCESS_KEY_ID", false),
        key("AWS_SECRET_ACCESS_KEY", false),
        key("AWS_SESSION_TOKEN", true),
    ]
}

/// Env names serve's container gets from install itself, with the flag
/// that sets each (`None`: always set, not configurable).
pub const OWNED_ENV: &[(&str, Option<&str>)] = &[
    ("COPY_JOB_NAMESPACE", Some("--namespace")),
    ("COPY_JOB_IMAGE", Some("--image")),
    ("COPY_JOB_SERVICE_ACCOUNT_NAME", None),
    ("PRIVATIZE_EXCLUDE_NAMESPACES", Some("--exclude-namespaces")),
    ("PRIVATIZE_LOG_FORMAT", None),
    ("POD_NAME", None),
    ("POD_NAMESPACE", None),
    ("PRIVATIZE_TLS_SECRET", None),
    ("ECR_REGISTRY", Some("--target-registry")),
    (
        "PRIVATIZE_SOURCE_CREDENTIALS_SECRET",
        Some("--source-credentials-secret"),
    ),
    ("PRIVATIZE_KMS_KEY", Some("--kms-key")),
    ("PRIVATIZE_PLATFORMS", Some("--platforms")),
    (
        "PRIVATIZE_COPY_JOB_POD_TEMPLATE",
        Some("--copy-job-pod-template"),
    ),
    ("PRIVATIZE_CA_FILE", Some("--ca-file")),
    ("AWS_ACCESS_KEY_ID", Some("--aws-credentials-secret")),
    ("AWS_SECRET_ACCESS_KEY", Some("--aws-credentials-secret")),
    ("AWS_SESSION_TOKEN", Some("--aws-credentials-secret")),
];

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An env var from the downward API.
fn env_field(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", cpu), ("memory", memory)])),
        limits: Some(quantities(&[("memory", memory_limit)])),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(NON_ROOT_UID),
        run_as_group: Some(NON_ROOT_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(strings(["ALL"])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn the_grace_period_outlasts_serves_default_shutdown() {
        let Command::Serve(args) = Cli::try_parse_from(["privatize", "serve"]).unwrap().command
        else {
            unreachable!("parsed `serve`")
        };
        let shutdown = args.shutdown_delay + args.shutdown_timeout;
        assert_eq!(shutdown, Duration::from_secs(25));
        assert!(shutdown < Duration::from_secs(TERMINATION_GRACE_SECONDS as u64));
    }
}
