//! Room: `privatize install` and `privatize uninstall`. Render the manifests,
//! keep or issue the TLS Secret, server-side apply everything, and
//! wait for the Deployment; uninstall removes the webhook configuration first.

pub mod manifests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::{Client, ResourceExt};

use crate::cli::{InstallArgs, UninstallArgs};
use crate::k8s::{self, Object};
use crate::tls::{self, Outcome};
use manifests::{objects, Settings, NAME, TLS_SECRET};

/// How long `install` waits for the Deployment by default.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// Runs `install`.
pub async fn install(args: InstallArgs) -> Result<()> {
    let mut settings = settings(&args)?;
    if args.dry_run {
        print!("{}", render_yaml(&objects(&settings)?)?);
        return Ok(());
    }
    let client = k8s::client().await?;
    let rendered = objects(&settings)?;
    k8s::apply(&client, &rendered[0]).await?; // the Namespace, before its Secret
    let sans = tls::service_sans(
        NAME,
        &settings.namespace,
        &url_host(args.webhook_url.as_deref())?,
    );
    let existing = k8s::read_tls_secret(&client, &settings.namespace, TLS_SECRET).await?;
    let (issued, outcome) = tls::keep_or_issue(existing, &sans, false)?;
    k8s::apply(
        &client,
        &k8s::tls_secret(&settings.namespace, TLS_SECRET, &issued)?,
    )
    .await?;
    eprintln!(
        "{:<55} {}",
        format!("Secret/{TLS_SECRET} in {}", settings.namespace),
        if outcome == Outcome::Issued {
            "certificate issued"
        } else {
            "certificate kept"
        }
    );
    settings.ca_bundle = Some(issued.ca_pem);
    for object in objects(&settings)? {
        let before = k8s::get(&client, &object)
            .await?
            .and_then(|o| o.resource_version());
        let after = k8s::apply(&client, &object).await?.resource_version();
        let state = match before {
            None => "created",
            Some(rv) if Some(rv.clone()) == after => "unchanged",
            Some(_) => "configured",
        };
        eprintln!("{:<55} {state}", object.describe());
    }
    if args.no_wait {
        return Ok(());
    }
    wait_for_deployment(
        &client,
        &settings.namespace,
        Duration::from_secs(args.wait_timeout),
    )
    .await
}

/// Runs `uninstall`: the webhook configuration first, so no pod or Secret is
/// ever sent to a half-removed server; then everything else, newest first.
pub async fn uninstall(args: UninstallArgs) -> Result<()> {
    let settings = Settings {
        namespace: args.namespace.clone(),
        image: String::new(),
        webhook_url: None,
        target_registry: None,
        service_account_annotations: BTreeMap::new(),
        ca_bundle: None,
    };
    let client = k8s::client().await?;
    let mut rendered = objects(&settings)?;
    rendered.insert(
        1,
        k8s::tls_secret(&settings.namespace, TLS_SECRET, &tls_placeholder())?,
    );
    rendered.reverse(); // the webhook configuration is last in apply order: first here
    let namespace = rendered
        .pop()
        .context("the manifest list holds the namespace")?;
    if args.webhook_only {
        rendered.truncate(1);
    }
    let namespace = (!args.webhook_only).then_some(namespace);
    for object in rendered.iter().chain(namespace.as_ref()) {
        let state = if k8s::delete(&client, object).await? {
            "deleted"
        } else {
            "already gone"
        };
        eprintln!("{:<55} {state}", object.describe());
    }
    Ok(())
}

fn settings(args: &InstallArgs) -> Result<Settings> {
    let service_account_annotations = args
        .service_account_annotations
        .iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("invalid --service-account-annotation {a:?}: expected KEY=VALUE"),
        })
        .collect::<Result<_>>()?;
    if let Some(url) = &args.webhook_url {
        if !url.starts_with("https://") {
            bail!("invalid --webhook-url {url:?}: the apiserver only calls https:// webhooks");
        }
    }
    Ok(Settings {
        namespace: args.namespace.clone(),
        image: args.image.clone(),
        webhook_url: args.webhook_url.clone(),
        target_registry: args.target_registry.clone(),
        service_account_annotations,
        ca_bundle: None,
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
pub fn render_yaml(objects: &[Object]) -> Result<String> {
    let mut out = String::from(
        "# privatize: rendered by `privatize install --dry-run`.\n\
         # After applying, create the TLS Secret and caBundle with:\n\
         #   privatize gen-certs --namespace <ns> --secret privatize-tls --webhook-config privatize\n",
    );
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&object.object).context("rendering YAML")?);
    }
    Ok(out)
}

async fn wait_for_deployment(client: &Client, namespace: &str, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    loop {
        let deployment = api
            .get(NAME)
            .await
            .with_context(|| format!("reading Deployment {NAME} in {namespace}"))?;
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let available = deployment
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        spinner.set_message(format!(
            "waiting for Deployment {NAME}: {available}/{wanted} available"
        ));
        if available >= wanted {
            spinner
                .finish_with_message(format!("Deployment {NAME}: {available}/{wanted} available"));
            return Ok(());
        }
        if started.elapsed() > timeout {
            spinner.abandon();
            bail!(
                "waiting for Deployment {NAME} in {namespace}: {available}/{wanted} available after {}s (check `kubectl -n {namespace} describe deployment {NAME}`)",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

/// `uninstall` only needs the Secret's name and kind, not a certificate.
fn tls_placeholder() -> tls::Issued {
    tls::Issued {
        ca_pem: String::new(),
        cert_pem: String::new(),
        key_pem: String::new(),
    }
}
