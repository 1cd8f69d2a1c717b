//! Turns `serve`'s flags into the pod webhook's parts: the decision
//! settings, the copy-Job template (with the identity-free settings Jobs take from serve), the
//! presence checker and the gate controller.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::copy_ca;
use super::credentials::Credentials;
use super::drift::Drifts;
use super::gate::{Gate, GateConfig};
use super::jobs::{self, Caps, JobSettings};
use super::metrics::Metrics;
use super::passon;
use super::platforms::CopyPlatforms;
use super::pods::Pods;
use super::presence::{CacheTimes, Checker, TargetAuth};
use super::sources::Sources;
use crate::cli::{ServeArgs, TagDrift, TagMutability, TargetKind};
use crate::copy_job::template::{self, PodTemplate};
use crate::copy_job::{self, CA_DIR, CA_VOLUME};
use crate::ecr::tokens::TokenCache;
use crate::image::{ImageRef, TargetRegistry};
use crate::mutate::pods::{default_exclude, Settings};
use crate::mutate::secrets::EcrRegistry;
use crate::registry::auth::{config_path, parse_creds, read_config};
use crate::registry::Transport;
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::Api;
use kube::Client;

/// Time limit of one presence HEAD (DESIGN §10).
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a missing answer is kept: the copy may land any moment.
const MISSING_TTL: Duration = Duration::from_secs(5);
/// The container name of serve in its own pod (install and the chart use it).
const OWN_CONTAINER: &str = "privatize";

/// Builds the pod webhook and its gate controller from the flags.
pub async fn pods(
    args: &ServeArgs,
    client: Client,
    metrics: Arc<Metrics>,
    tokens: Arc<TokenCache>,
    credentials: Arc<Credentials>,
) -> Result<Pods> {
    let registry = args
        .target_registry
        .as_deref()
        .context("no target registry: set ECR_REGISTRY (or --target-registry)")?;
    let target = TargetRegistry::parse(registry)?;
    let mut exclude = if args.exclude.is_empty() {
        default_exclude()
    } else {
        args.exclude.clone()
    };
    exclude.retain(|e| !e.trim().is_empty());
    let settings = Settings {
        target: target.clone(),
        swap_policy: args.swap_policy,
        exclude,
        exclude_namespaces: args.exclude_namespaces.clone(),
        include_registries: args.include_registries.clone(),
        dry_run: args.dry_run,
        private_source_namespaces: args
            .private_source_namespaces
            .iter()
            .filter(|g| !g.trim().is_empty())
            .cloned()
            .collect(),
        max_images_per_pod: args.max_images_per_pod as usize,
        require_pull_secret: args.require_pull_secret,
        pin_digests: args.pin_digests,
    };
    let own_pod = own_pod(&client).await?;
    let pod_template = match &args.copy_job_pod_template {
        Some(path) => read_pod_template(path)?,
        None => PodTemplate::default(),
    };
    if !args.transport.ca_files.is_empty() {
        copy_ca::check(&client, &args.copy_job_namespace, &args.transport.ca_files).await?;
    }
    let jobs = job_settings(args, own_pod.as_ref(), pod_template)?;
    if let Some(path) = &args.copy_job_pod_template {
        check_merged(&jobs, path)?;
    }
    let transport = Transport {
        ca_files: args.transport.ca_files.clone(),
        plain_http: args.transport.plain_http.clone(),
    };
    let checker = Arc::new(Checker::new(
        transport.clone(),
        target_auth(args, &target.host, tokens).await?,
        CacheTimes {
            present: args.presence_cache_ttl,
            missing: MISSING_TTL.min(args.presence_cache_ttl),
            timeout: HEAD_TIMEOUT,
        },
    ));
    let sources = Arc::new(Sources::new(
        &transport,
        args.presence_cache_ttl,
        HEAD_TIMEOUT,
        metrics.clone(),
    )?);
    let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "privatize".into());
    let gate = Arc::new(Gate::new(GateConfig {
        client: client.clone(),
        checker: checker.clone(),
        sources: sources.clone(),
        jobs: jobs.clone(),
        caps: Caps {
            total: args.max_copy_jobs as usize,
            per_namespace: args.max_copy_jobs_per_namespace as usize,
        },
        metrics: metrics.clone(),
        settings: settings.clone(),
        sweep_interval: args.sweep_interval,
        gate_timeout: args.gate_timeout,
        instance,
        platforms: Arc::new(CopyPlatforms::new(args.platforms.clone())),
    }));
    let drifts = (args.tag_drift != TagDrift::Ignore).then(|| {
        Arc::new(Drifts::new(
            args.tag_drift,
            args.repository.tag_mutability == TagMutability::Immutable,
            checker.clone(),
            sources.clone(),
            args.tag_recheck_interval,
            HEAD_TIMEOUT,
        ))
    });
    Ok(Pods::from_parts(
        settings,
        client,
        checker,
        sources,
        jobs,
        metrics,
        gate,
        args.pull_secret_name.clone(),
        credentials,
    )
    .with_drifts(drifts, args.tag_recheck_interval))
}

/// serve's own pod, when it runs in one (POD_NAME / POD_NAMESPACE from the downward API).
async fn own_pod(client: &Client) -> Result<Option<Pod>> {
    let (Ok(name), Ok(namespace)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE"))
    else {
        return Ok(None);
    };
    Api::<Pod>::namespaced(client.clone(), &namespace)
        .get_opt(&name)
        .await
        .with_context(|| format!("reading serve's own pod {namespace}/{name}"))
}

/// Reads and validates `--copy-job-pod-template`.
fn read_pod_template(path: &Path) -> Result<PodTemplate> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the copy-Job pod template {}", path.display()))?;
    template::parse(&text)
        .with_context(|| format!("invalid copy-Job pod template {}", path.display()))
}

/// The template merged into a sample Job must not clash with what privatize gives Jobs.
fn check_merged(jobs: &JobSettings, path: &Path) -> Result<()> {
    let sample = ImageRef::parse("example.invalid/sample:1")?;
    let job = jobs::copy_job(jobs, &sample, &sample, &[], "sample");
    let pod = job.spec.and_then(|s| s.template.spec).unwrap_or_default();
    match template::clash(&pod) {
        Some(clash) => bail!("invalid copy-Job pod template {}: {clash}", path.display()),
        None => Ok(()),
    }
}

fn job_settings(
    args: &ServeArgs,
    own_pod: Option<&Pod>,
    pod_template: PodTemplate,
) -> Result<JobSettings> {
    let image = match (&args.copy_job_image, own_pod) {
        (Some(image), _) => image.clone(),
        (None, Some(pod)) => pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| c.name == OWN_CONTAINER)
                    .or(s.containers.first())
            })
            .and_then(|c| c.image.clone())
            .context("reading serve's own image from its pod")?,
        (None, None) => bail!(
            "no copy-Job image: set COPY_JOB_IMAGE (or --copy-job-image) when serve does not run in a pod"
        ),
    };
    let mut pass = match own_pod {
        // The CA files are not passed from serve's paths: the Jobs mount the CA ConfigMap.
        Some(pod) => passon::from_pod(pod, OWN_CONTAINER, &[]),
        None => passon::from_process(std::env::vars()),
    };
    if !pass.withheld.is_empty() {
        tracing::info!(
            withheld = ?pass.withheld,
            service_account = %args.copy_job_service_account_name,
            "copy Jobs do not get serve's AWS identity or secrets: theirs is their ServiceAccount's (IRSA, EKS Pod Identity) or the copy-Job pod template's"
        );
    }
    let mut set = |name: &str, value: String| {
        pass.env.retain(|e| e.name != name);
        pass.env.push(EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        });
    };
    let with_ca = !args.transport.ca_files.is_empty();
    if with_ca {
        set("PRIVATIZE_CA_FILE", copy_job::ca_file());
    }
    if !args.transport.plain_http.is_empty() {
        set("PRIVATIZE_PLAIN_HTTP", args.transport.plain_http.join(","));
    }
    if args.transport.target_kind != TargetKind::Auto {
        let kind = match args.transport.target_kind {
            TargetKind::Ecr => "ecr",
            _ => "registry",
        };
        set("PRIVATIZE_TARGET_KIND", kind.into());
    }
    for (name, value) in repository_env(args) {
        set(name, value);
    }
    set("PRIVATIZE_SUMMARY_FILE", jobs::SUMMARY_FILE.into());
    if with_ca {
        pass.volumes
            .retain(|(v, m)| v.name != CA_VOLUME && m.mount_path != CA_DIR);
        pass.volumes.push(copy_ca::volume());
    }
    Ok(JobSettings {
        namespace: args.copy_job_namespace.clone(),
        image,
        service_account: args.copy_job_service_account_name.clone(),
        backoff_limit: args.copy_job_backoff_limit,
        completions: args.copy_job_completion,
        active_deadline_seconds: args.copy_job_active_deadline.as_secs() as i64,
        ttl_seconds_after_finished: args.copy_job_ttl.as_secs().min(i32::MAX as u64) as i32,
        source_credentials_secret: args.source_credentials_secret.clone(),
        env: pass.env,
        volumes: pass.volumes,
        pod_template,
    })
}

/// The ECR repository settings serve was given, for the Jobs that create
/// repositories, and whether the Jobs bring referrers along.
fn repository_env(args: &ServeArgs) -> Vec<(&'static str, String)> {
    let r = &args.repository;
    let mut env = vec![
        ("PRIVATIZE_SCAN_ON_PUSH", r.scan_on_push.to_string()),
        (
            "PRIVATIZE_TAG_MUTABILITY",
            format!("{:?}", r.tag_mutability).to_ascii_uppercase(),
        ),
        (
            "PRIVATIZE_RECONCILE_REPOSITORIES",
            r.reconcile_repositories.to_string(),
        ),
    ];
    env.push((
        "PRIVATIZE_COPY_REFERRERS",
        args.referrers.copy_referrers.to_string(),
    ));
    env.push((
        "PRIVATIZE_REQUIRE_REFERRERS",
        args.referrers.require_referrers.to_string(),
    ));
    if let Some(key) = &r.kms_key {
        env.push(("PRIVATIZE_KMS_KEY", key.clone()));
    }
    if !r.repository_tags.is_empty() {
        env.push(("PRIVATIZE_REPOSITORY_TAGS", r.repository_tags.join(",")));
    }
    if let Some(policy) = &r.repository_policy {
        env.push(("ECR_REPOSITORY_POLICY_TEXT", policy.clone()));
    }
    if let Some(policy) = &r.lifecycle_policy {
        env.push(("PRIVATIZE_LIFECYCLE_POLICY_TEXT", policy.clone()));
    }
    env
}

async fn target_auth(args: &ServeArgs, host: &str, tokens: Arc<TokenCache>) -> Result<TargetAuth> {
    if let Some(registry) = ecr_target(args).await? {
        return Ok(TargetAuth::Ecr {
            region: registry.region,
            tokens,
        });
    }
    if let Some(creds) = &args.transport.dest_creds {
        return Ok(TargetAuth::Fixed(parse_creds(creds, "--dest-creds")?));
    }
    let authfile = args.transport.authfile.as_deref();
    let config = read_config(config_path(authfile).as_deref(), authfile.is_some())?;
    Ok(TargetAuth::Fixed(
        config
            .credentials(host)?
            .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous),
    ))
}

/// `ECR_REGISTRY` as an ECR registry with its region: from the host name, or, for
/// a host that is not an ECR host with `PRIVATIZE_TARGET_KIND=ecr` (a test registry
/// paired with an ECR API emulator), from the AWS settings. `None` without an ECR
/// target, for both webhooks.
pub async fn ecr_target(args: &ServeArgs) -> Result<Option<EcrRegistry>> {
    let Some(target) = args.target_registry.as_deref() else {
        return Ok(None);
    };
    let host = target
        .split('/')
        .next()
        .unwrap_or(target)
        .to_ascii_lowercase();
    match (args.transport.target_kind, EcrRegistry::parse(&host)) {
        (TargetKind::Registry, _) => return Ok(None),
        (_, Some(registry)) => return Ok(Some(registry)),
        (TargetKind::Auto, None) => return Ok(None),
        (TargetKind::Ecr, None) => {}
    }
    let client = crate::ecr::client(None).await?;
    let region = client
        .config()
        .region()
        .map(|r| r.to_string())
        .context("no AWS region is known for the ECR target: set AWS_REGION")?;
    Ok(Some(EcrRegistry { host, region }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn serve_args(args: &[&str]) -> ServeArgs {
        let argv = ["privatize", "serve"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(args) => *args,
            _ => unreachable!("parsed `serve`"),
        }
    }

    #[test]
    fn in_a_pod_the_jobs_mount_the_ca_config_map_once_and_not_serves_own_ca_volume() {
        // serve's pod as install renders it: the CA ConfigMap under another volume name.
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [{
                    "name": "privatize",
                    "image": "example.com/privatize:1",
                    "env": [{"name": "PRIVATIZE_CA_FILE", "value": "/etc/privatize/ca/ca.pem"}],
                    "volumeMounts": [{"name": "ca", "mountPath": "/etc/privatize/ca"}]
                }],
                "volumes": [{"name": "ca", "configMap": {"name": "privatize-ca"}}]
            }
        }))
        .unwrap();
        let args = serve_args(&["--ca-file", "/etc/privatize/ca/ca.pem"]);
        let jobs = job_settings(&args, Some(&pod), PodTemplate::default()).unwrap();
        let volumes: Vec<(&str, &str)> = jobs
            .volumes
            .iter()
            .map(|(v, m)| (v.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(volumes, [(CA_VOLUME, CA_DIR)]);
        let ca: Vec<&EnvVar> = jobs
            .env
            .iter()
            .filter(|e| e.name == "PRIVATIZE_CA_FILE")
            .collect();
        assert_eq!(ca.len(), 1);
        assert_eq!(ca[0].value.as_deref(), Some("/etc/privatize/ca/ca.pem"));
    }

    #[test]
    fn outside_a_pod_the_jobs_get_the_config_map_not_serves_host_path() {
        let args = serve_args(&[
            "--ca-file",
            "/home/me/ca.pem",
            "--copy-job-image",
            "example.com/privatize:1",
        ]);
        let jobs = job_settings(&args, None, PodTemplate::default()).unwrap();
        assert_eq!(jobs.volumes.len(), 1);
        assert_eq!(jobs.volumes[0].0.name, CA_VOLUME);
        assert!(jobs.env.iter().all(|e| !e
            .value
            .as_deref()
            .unwrap_or_default()
            .contains("/home/me")));
    }
}
