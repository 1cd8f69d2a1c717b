//! Room: `privatize install` and `privatize uninstall`. Render the manifests,
//! keep or issue the TLS Secret, server-side apply everything, wait for the
//! Deployment's rollout and only then register the webhook configuration;
//! uninstall removes the webhook configuration first, then releases every
//! pod still gated, then the rest.

pub mod credentials;
pub mod iam;
pub mod manifests;
pub mod rollout;
pub mod settle;

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, Resource, ResourceExt};

use crate::cli::{InstallArgs, UninstallArgs};
use crate::copy_job::{self, template};
use crate::k8s::{self, Object, MANAGED_BY};
use crate::tls::{self, Outcome};
use manifests::{objects, retired, AccountAnnotations, Settings, NAME, TLS_SECRET};

/// Annotation keys that give a pod an AWS role (IRSA).
const ROLE_ANNOTATIONS: [&str; 1] = ["eks.amazonaws.com/role-arn"];

/// Runs `install`.
pub async fn install(args: InstallArgs) -> Result<()> {
    let mut settings = settings(&args)?;
    if args.iam_policies {
        let policies = iam::policies(
            settings.target_registry.as_deref(),
            &settings.namespace,
            settings.kms_key.as_deref(),
        )?;
        println!(
            "{}",
            serde_json::to_string_pretty(&policies).context("rendering the IAM policies")?
        );
        return Ok(());
    }
    if args.dry_run {
        print!("{}", render_yaml(&settings, &objects(&settings)?)?);
        return Ok(());
    }
    if settings.target_registry.is_none() {
        bail!(
            "no target registry: pass --target-registry REGISTRY[/PREFIX] (or set ECR_REGISTRY); serve cannot start without one"
        );
    }
    let client = k8s::client().await?;
    settings.credential_namespaces =
        credentials::existing(&client, &settings.credential_namespaces).await?;
    let parts = Parts::of(objects(&settings)?, &settings.namespace)?;
    apply_and_report(&client, &parts.namespace).await?; // before the Secret in it
    let sans = tls::service_sans(
        NAME,
        &settings.namespace,
        &url_host(args.webhook_url.as_deref())?,
    );
    settings.ca_bundle = Some(certificate(&client, &settings.namespace, &sans).await?);
    for object in &parts.rest {
        apply_and_report(&client, object).await?;
    }
    // After the new RBAC is in place, so the server never lacks a right.
    retire(&client, &settings, "deleted (no longer used)").await?;
    credentials::unbind_others(
        &client,
        &settings.credential_namespaces,
        "deleted (no longer used)",
    )
    .await?;
    credentials::warn_unbound(
        &client,
        &settings.credential_namespaces,
        &settings.namespace,
    )
    .await?;
    if let Some(name) = &settings.source_credentials_secret {
        check_source_credentials(&client, &settings.namespace, name).await;
    }
    // Rendered again now that the caBundle is known.
    let webhooks = Parts::of(objects(&settings)?, &settings.namespace)?.webhooks;
    if args.no_wait {
        apply_and_report(&client, &webhooks).await?;
        eprintln!(
            "--no-wait: the webhooks are live now, before Deployment {NAME} is available: \
             until it is, pods are admitted unchanged and managed Secrets cannot be created or updated"
        );
        return Ok(());
    }
    // The secret webhooks are failurePolicy: Fail: registered before a server
    // answers, they would refuse every managed Secret for the whole rollout.
    rollout::wait(
        &client,
        &settings.namespace,
        NAME,
        Duration::from_secs(args.wait_timeout),
    )
    .await
    .context("webhook configuration not registered")?;
    apply_and_report(&client, &webhooks).await
}

/// Runs `uninstall`: the webhook configuration first, so no pod or Secret is
/// ever sent to a half-removed server; then everything else, the Namespace last.
pub async fn uninstall(args: UninstallArgs) -> Result<()> {
    let settings = Settings {
        namespace: args.namespace.clone(),
        image: String::new(),
        webhook_url: None,
        target_registry: None,
        annotations: AccountAnnotations::default(),
        kms_key: None,
        source_credentials_secret: None,
        ca_bundle: None,
        replicas: 2,
        // None: `retire` deletes the ConfigMaps an install made.
        copy_job_pod_template: None,
        registry_ca: None,
        credential_namespaces: Vec::new(),
        server_env: Vec::new(),
        aws_credentials_secret: None,
        exclude_namespaces: Vec::new(),
        platforms: "all".into(),
    };
    let client = k8s::client().await?;
    let tls_secret = Object::new(&Secret {
        metadata: ObjectMeta {
            name: Some(TLS_SECRET.into()),
            namespace: Some(settings.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    })?;
    let parts = Parts::of(objects(&settings)?, &settings.namespace)?;
    // Read before serve's Deployment goes: which pods are this installation's.
    let target = settle::installed_target(
        &client,
        &settings.namespace,
        NAME,
        args.target_registry.as_deref(),
    )
    .await?;
    for (i, object) in parts
        .uninstall_order(tls_secret, args.webhook_only)
        .into_iter()
        .enumerate()
    {
        let state = if k8s::delete(&client, &object).await? {
            "deleted"
        } else {
            "already gone"
        };
        eprintln!("{:<55} {state}", object.describe());
        if i == 0 {
            // The webhook configuration is gone: no pod is gated any more.
            let settled = settle::settle_pods(&client, target.as_ref()).await?;
            let scope = match &target {
                Some(t) if t.prefix.is_empty() => format!("images under {}", t.host),
                Some(t) => format!("images under {}/{}", t.host, t.prefix),
                None => "every recorded image (target unknown)".to_string(),
            };
            eprintln!(
                "{:<55} {} released ({scope} set back to their originals), {} copy-pending unlabelled{}",
                "gated pods",
                settled.released,
                settled.unpended,
                if settled.failed > 0 {
                    format!(", {} failed", settled.failed)
                } else {
                    String::new()
                }
            );
            if settled.failed > 0 {
                bail!(
                    "{} gated pod(s) could not be released (see the warnings above); run uninstall again",
                    settled.failed
                );
            }
        }
    }
    if !args.webhook_only {
        // What this run does not render (the optional ConfigMaps, older
        // versions' objects, the Secret rights bound per namespace) goes too.
        retire(&client, &settings, "deleted").await?;
        credentials::unbind_others(&client, &[], "deleted").await?;
    }
    Ok(())
}

/// Deletes what an earlier version installed and this one does not (see
/// `manifests::retired`), when privatize manages it; `said` is the report.
async fn retire(client: &Client, settings: &Settings, said: &str) -> Result<()> {
    for object in retired(settings)? {
        let managed = k8s::get(client, &object).await?.is_some_and(|o| {
            o.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        });
        if managed && k8s::delete(client, &object).await? {
            eprintln!("{:<55} {said}", object.describe());
        }
    }
    Ok(())
}

/// Warns when the source-credentials Secret is not there (yet): copy Jobs
/// mounting it cannot start until it exists.
async fn check_source_credentials(client: &Client, namespace: &str, name: &str) {
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(name)
        .await;
    match found {
        Ok(Some(_)) => {}
        Ok(None) => eprintln!(
            "warning: Secret {name} not found in {namespace}: copy Jobs cannot start until it exists \
             (kubectl -n {namespace} create secret generic {name} --type=kubernetes.io/dockerconfigjson \
             --from-file=.dockerconfigjson=config.json)"
        ),
        Err(err) => eprintln!("warning: could not check Secret {name} in {namespace}: {err}"),
    }
}

/// The rendered objects as install and uninstall use them, found by kind and
/// name (never by position): the Namespace comes first and goes last, the
/// webhook configuration comes last and goes first.
struct Parts {
    namespace: Object,
    webhooks: Object,
    /// Everything else, in render order.
    rest: Vec<Object>,
}

impl Parts {
    fn of(mut rendered: Vec<Object>, namespace: &str) -> Result<Self> {
        Ok(Self {
            namespace: take::<Namespace>(&mut rendered, namespace)?,
            webhooks: take::<MutatingWebhookConfiguration>(&mut rendered, NAME)?,
            rest: rendered,
        })
    }

    /// Deletion order: the webhook configuration, then (unless `webhook_only`)
    /// the rest newest first, the TLS Secret and the Namespace.
    fn uninstall_order(self, tls_secret: Object, webhook_only: bool) -> Vec<Object> {
        let mut order = vec![self.webhooks];
        if !webhook_only {
            order.extend(self.rest.into_iter().rev());
            order.push(tls_secret);
            order.push(self.namespace);
        }
        order
    }
}

/// Removes the object of type `K` called `name` from the list.
fn take<K: Resource<DynamicType = ()>>(objects: &mut Vec<Object>, name: &str) -> Result<Object> {
    let index = objects
        .iter()
        .position(|o| o.is::<K>(name))
        .with_context(|| format!("the manifests hold no {}/{name}", K::kind(&())))?;
    Ok(objects.remove(index))
}

/// Applies one object and says whether it was created, changed or left alone.
async fn apply_and_report(client: &Client, object: &Object) -> Result<()> {
    let before = k8s::get(client, object)
        .await?
        .and_then(|o| o.resource_version());
    let after = k8s::apply(client, object).await?.resource_version();
    let state = match before {
        None => "created",
        Some(rv) if Some(rv.clone()) == after => "unchanged",
        Some(_) => "configured",
    };
    eprintln!("{:<55} {state}", object.describe());
    Ok(())
}

/// Keeps or issues the serving certificate in the TLS Secret and returns the
/// webhooks' caBundle. On a rotation a registered webhook configuration
/// first learns the new CA next to the old one, and only then does the Secret
/// change: pods still serving the old certificate stay trusted until the
/// rotation settles (see `tls::ca_bundle`).
async fn certificate(client: &Client, namespace: &str, sans: &[String]) -> Result<String> {
    let existing = k8s::read_tls_secret(client, namespace, TLS_SECRET).await?;
    let (issued, outcome) = tls::keep_or_issue(existing, sans, false)?;
    let registered = k8s::read_ca_bundle(client, NAME).await?;
    let bundle = tls::ca_bundle(registered.as_deref(), &issued, SystemTime::now())?;
    if outcome == Outcome::Issued && registered.is_some() {
        k8s::patch_ca_bundle(client, NAME, &bundle).await?;
    }
    k8s::apply(client, &k8s::tls_secret(namespace, TLS_SECRET, &issued)?).await?;
    let trusted = match tls::count_certificates(&bundle) {
        1 => String::new(),
        n => format!(" (the webhooks trust {n} CAs until the rotation settles)"),
    };
    eprintln!(
        "{:<55} {}{trusted}",
        format!("Secret/{TLS_SECRET} in {namespace}"),
        match outcome {
            Outcome::Issued => "certificate issued",
            Outcome::Kept => "certificate kept",
        }
    );
    Ok(bundle)
}

fn settings(args: &InstallArgs) -> Result<Settings> {
    if !args.service_account_annotations.is_empty() {
        // One identity for every account gave serve (and so tenants) push rights:
        // an upgrade must choose, not inherit that.
        bail!(
            "--service-account-annotation is gone: it put one identity on all three accounts; use \
             --webhook-service-account-annotation (serve: pull), --copy-job-service-account-annotation \
             (copy Jobs: push) and --refresh-service-account-annotation (no AWS identity); \
             `privatize install --iam-policies` prints each role's policy"
        );
    }
    let annotations = AccountAnnotations {
        webhook: args
            .webhook_service_account_annotations
            .iter()
            .cloned()
            .collect(),
        copy_job: args
            .copy_job_service_account_annotations
            .iter()
            .cloned()
            .collect(),
        refresh: args
            .refresh_service_account_annotations
            .iter()
            .cloned()
            .collect(),
    };
    if let Some(key) = ROLE_ANNOTATIONS
        .iter()
        .find(|k| annotations.refresh.contains_key(**k))
    {
        eprintln!(
            "warning: --refresh-service-account-annotation {key}: refresh-secrets calls no AWS API, \
             so the CronJob needs no role"
        );
    }
    if let Some(url) = &args.webhook_url {
        if !url.starts_with("https://") {
            bail!("invalid --webhook-url {url:?}: the apiserver only calls https:// webhooks");
        }
    }
    if let Some(name) = &args.source_credentials_secret {
        if !is_object_name(name) {
            bail!(
                "invalid --source-credentials-secret {name:?}: not a Secret name \
                 (lower-case letters, digits, '-' and '.', at most 253)"
            );
        }
    }
    if args.replicas == 0 && args.webhook_url.is_none() {
        bail!(
            "--replicas 0 needs --webhook-url: with no server pod the webhooks would call a Service \
             with no endpoints, and the Secret webhooks (failurePolicy Fail) would refuse every managed Secret"
        );
    }
    let copy_job_pod_template = match &args.copy_job_pod_template {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the copy-Job pod template {}", path.display()))?;
            template::parse(&text)
                .with_context(|| format!("invalid copy-Job pod template {}", path.display()))?;
            Some(text)
        }
        None => None,
    };
    let registry_ca = if args.ca_files.is_empty() {
        None
    } else {
        let mut files = Vec::new();
        for path in &args.ca_files {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA file {}", path.display()))?;
            files.push((path.display().to_string(), pem));
        }
        Some(copy_job::ca_bundle(&files)?)
    };
    Ok(Settings {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        webhook_url: args.webhook_url.clone(),
        target_registry: args.target_registry.clone(),
        annotations,
        kms_key: args.kms_key.clone(),
        source_credentials_secret: args.source_credentials_secret.clone(),
        ca_bundle: None,
        replicas: args.replicas.into(),
        copy_job_pod_template,
        registry_ca,
        credential_namespaces: credential_namespaces(&args.credential_namespaces)?,
        server_env: server_env(&args.env)?,
        aws_credentials_secret: args.aws_credentials_secret.clone(),
        exclude_namespaces: exclude_namespaces(&args.exclude_namespaces, &args.namespace),
        platforms: args.platforms.clone(),
    })
}

/// `--exclude-namespaces` (default `kube-system`), with the install
/// namespace always among them: privatize's own Jobs are never rewritten.
fn exclude_namespaces(given: &[String], namespace: &str) -> Vec<String> {
    let mut names: Vec<String> = given
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        names.push("kube-system".into());
    }
    if !names.iter().any(|n| n == namespace) {
        names.push(namespace.to_string());
    }
    names
}

/// Env names that carry a secret: never as a plain `--env` value.
const SECRET_ENV: &[&str] = &["PRIVATIZE_SRC_CREDS", "PRIVATIZE_DEST_CREDS"];

/// `--env`: valid names, none that install sets itself, no secret, each once.
fn server_env(given: &[(String, String)]) -> Result<Vec<(String, String)>> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in given {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid {
            bail!(
                "--env {name}: not an environment variable name (letters, digits, `_`, `-`, `.`)"
            );
        }
        if let Some((_, flag)) = manifests::OWNED_ENV.iter().find(|(owned, _)| owned == name) {
            match flag {
                Some(flag) => bail!("--env {name}: install sets it; use {flag}"),
                None => bail!("--env {name}: install sets it and it cannot be changed"),
            }
        }
        if SECRET_ENV.contains(&name.as_str()) {
            bail!("--env {name}: a secret does not belong in the Deployment's spec (anyone who may read it would see it); keep it in a Secret (serve's AWS keys: --aws-credentials-secret)");
        }
        if !seen.insert(name.as_str()) {
            bail!("--env {name}: given twice");
        }
    }
    Ok(given.to_vec())
}

/// `--credential-namespaces`: object names, or `*` alone.
fn credential_namespaces(given: &[String]) -> Result<Vec<String>> {
    let names: Vec<String> = given
        .iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().any(|n| n == "*") {
        if names.len() > 1 {
            bail!("--credential-namespaces: `*` binds privatize-credentials cluster-wide; give it alone");
        }
        return Ok(names);
    }
    if let Some(bad) = names.iter().find(|n| !is_object_name(n) || n.contains('.')) {
        bail!("--credential-namespaces: {bad:?} is not a namespace name");
    }
    Ok(names)
}

/// Whether `name` is a valid object name (an RFC 1123 DNS subdomain).
fn is_object_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The host of `--webhook-url`, which the serving certificate must name.
fn url_host(url: Option<&str>) -> Result<Vec<String>> {
    let Some(url) = url else {
        return Ok(Vec::new());
    };
    let rest = url.trim_start_matches("https://");
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() {
        bail!("invalid --webhook-url {url:?}: no host");
    }
    Ok(vec![host.trim_matches(['[', ']']).to_string()])
}

/// The YAML stream `install --dry-run` prints.
pub fn render_yaml(settings: &Settings, objects: &[Object]) -> Result<String> {
    let mut out = String::from(
        "# privatize: rendered by `privatize install --dry-run`.\n\
         # After applying, create the TLS Secret and caBundle with:\n\
         #   privatize gen-certs --namespace <ns> --secret privatize-tls --webhook-config privatize\n",
    );
    if settings.target_registry.is_none() {
        out.push_str(
            "# No target registry: set env ECR_REGISTRY of Deployment/privatize (REGISTRY[/PREFIX])\n\
             # before applying, or render with --target-registry; serve cannot start without one.\n",
        );
    }
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object.object).context("rendering YAML")?);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "install/install_tests.rs"]
mod tests;
