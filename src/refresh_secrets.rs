//! Room: `privatize refresh-secrets`. Finds managed Secrets in enabled namespaces
//! whose ECR logins expire soon, makes the webhook re-inject them (annotation
//! `privatize.io/refresh-requested-at`), reads each back and reports.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::cli::{OutputFormat, RefreshSecretsArgs};
use crate::k8s::FIELD_MANAGER;
use crate::mutate::secrets::{
    format_time, parse_time, ECR_ANYWHERE_MANAGED_LABEL, ECR_ANYWHERE_NAMESPACE_LABEL, EXPIRES_AT,
    MANAGED_LABEL, NAMESPACE_LABEL, REFRESHED_AT, REFRESH_REQUESTED_AT,
};

/// Objects asked for per list call.
const PAGE: u32 = 500;

/// What one run did, for the summary and `--output json`.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Created by `--ensure` (and filled in by the webhook at once).
    pub created: Vec<Done>,
    /// Re-injected by the webhook.
    pub refreshed: Vec<Done>,
    /// Left alone: their logins last longer than `--refresh-before`.
    pub fresh: Vec<Done>,
    pub failed: Vec<Failed>,
    /// Enabled namespaces where this account may not read Secrets (no
    /// RoleBinding of `privatize-credentials`): skipped, not failed.
    pub unbound: Vec<String>,
}

/// A Secret and when its logins expire now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    pub namespace: String,
    pub name: String,
    pub expires_at: String,
}

/// A Secret that could not be created or refreshed, and why.
#[derive(Debug, Serialize)]
pub struct Failed {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Runs `privatize refresh-secrets`; fails (non-zero exit) when any Secret failed.
pub async fn run(args: RefreshSecretsArgs) -> Result<()> {
    let client = crate::k8s::client().await?;
    let summary = refresh(&client, &args).await?;
    print(&summary, args.output)?;
    let failed = summary.failed.len();
    if failed > 0 {
        let total = failed + summary.created.len() + summary.refreshed.len() + summary.fresh.len();
        bail!("{failed} of {total} managed Secrets could not be refreshed");
    }
    Ok(())
}

/// Lists, ensures and refreshes; per-Secret failures land in the summary, only a
/// failure to list anything is an error.
pub async fn refresh(client: &Client, args: &RefreshSecretsArgs) -> Result<Summary> {
    let now = SystemTime::now();
    let mut namespaces = enabled_namespaces(client).await?;
    if !args.namespaces.is_empty() {
        for asked in &args.namespaces {
            if !namespaces.contains(asked) {
                tracing::warn!(namespace = %asked, "namespace not enabled for ECR credentials: skipped");
            }
        }
        namespaces.retain(|ns| args.namespaces.contains(ns));
    }
    let (secrets, unbound) =
        managed_secrets(client, &namespaces, !args.namespaces.is_empty()).await?;
    let install_namespace = client.default_namespace().to_string();
    for namespace in &unbound {
        tracing::warn!(
            namespace = %namespace,
            grant = %crate::mutate::secrets::grant_command(namespace, &install_namespace),
            "namespace enabled for ECR credentials, but privatize may not read its Secrets (no RoleBinding of privatize-credentials): skipped"
        );
    }
    namespaces.retain(|ns| !unbound.contains(ns));
    let mut summary = Summary {
        unbound: unbound.into_iter().collect(),
        ..Summary::default()
    };
    let concurrency = usize::from(args.concurrency);
    if args.ensure {
        let lacking: Vec<&String> = namespaces
            .iter()
            .filter(|ns| !secrets.contains_key(&(ns.to_string(), args.pull_secret_name.clone())))
            .collect();
        let results: Vec<_> = stream::iter(lacking)
            .map(|ns| ensure(client, ns, &args.pull_secret_name, args.wait))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for result in results.into_iter().flatten() {
            match result {
                Ok(done) => summary.created.push(done),
                Err(failed) => summary.failed.push(failed),
            }
        }
    }
    let mut due = Vec::new();
    for secret in secrets.into_values() {
        match refresh_reason(&secret, now, args.refresh_before, args.force) {
            Some(reason) => due.push((secret, reason)),
            None => summary.fresh.push(done(&secret)),
        }
    }
    let requested_at = format_time(now);
    let results: Vec<_> = stream::iter(due)
        .map(|(secret, reason)| refresh_one(client, secret, reason, &requested_at, args.wait))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for result in results {
        match result {
            Ok(done) => summary.refreshed.push(done),
            Err(failed) => summary.failed.push(failed),
        }
    }
    let key = |namespace: &String, name: &String| (namespace.clone(), name.clone());
    summary.created.sort_by_key(|d| key(&d.namespace, &d.name));
    summary
        .refreshed
        .sort_by_key(|d| key(&d.namespace, &d.name));
    summary.fresh.sort_by_key(|d| key(&d.namespace, &d.name));
    summary.failed.sort_by_key(|f| key(&f.namespace, &f.name));
    Ok(summary)
}

/// Why a Secret is due for a refresh; `None` while its logins outlast `before`.
pub fn refresh_reason(
    secret: &Secret,
    now: SystemTime,
    before: Duration,
    force: bool,
) -> Option<String> {
    if force {
        return Some("--force".to_string());
    }
    let Some(text) = secret.annotations().get(EXPIRES_AT) else {
        return Some(format!("no {EXPIRES_AT}"));
    };
    let Some(expires_at) = parse_time(text) else {
        return Some(format!("unreadable {EXPIRES_AT} {text:?}"));
    };
    (expires_at <= now + before).then(|| format!("expires at {text}"))
}

/// Checks serve wrote a fresh login into a Secret: `refreshed-at` later than `before`
/// (any value when there was none) and `expires-at` in the future. Returns
/// the expiry text.
pub fn check_refreshed(
    secret: &Secret,
    before: Option<SystemTime>,
    now: SystemTime,
) -> std::result::Result<String, String> {
    let annotations = secret.annotations();
    let refreshed = annotations.get(REFRESHED_AT);
    let moved = match (refreshed.and_then(|t| parse_time(t)), before) {
        (Some(after), Some(before)) => after > before,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !moved {
        return Err(match refreshed {
            Some(text) => format!(
                "serve wrote no fresh login: {REFRESHED_AT} is still {text} \
                 (is serve running, and may it read Secrets here: a RoleBinding of privatize-credentials?)"
            ),
            None => format!(
                "serve wrote no login: no {REFRESHED_AT} (is serve running, and may it read Secrets here: a RoleBinding of privatize-credentials?)"
            ),
        });
    }
    let Some(text) = annotations.get(EXPIRES_AT) else {
        return Err(format!("no {EXPIRES_AT} after the refresh"));
    };
    match parse_time(text) {
        Some(at) if at > now => Ok(text.clone()),
        Some(_) => Err(format!(
            "{EXPIRES_AT} {text} is in the past after the refresh"
        )),
        None => Err(format!(
            "unreadable {EXPIRES_AT} {text:?} after the refresh"
        )),
    }
}

/// Namespaces labelled for managed credentials (either scheme), minus those being deleted.
async fn enabled_namespaces(client: &Client) -> Result<BTreeSet<String>> {
    let api = Api::<Namespace>::all(client.clone());
    let mut names = BTreeSet::new();
    for (key, value) in [NAMESPACE_LABEL, ECR_ANYWHERE_NAMESPACE_LABEL] {
        let selector = format!("{key}={value}");
        for namespace in list_all(&api, &selector)
            .await
            .with_context(|| format!("listing namespaces labelled {selector}"))?
        {
            if namespace.metadata.deletion_timestamp.is_none() {
                names.insert(namespace.name_any());
            }
        }
    }
    Ok(names)
}

/// Managed Secrets (either label scheme) in `namespaces`, by namespace and
/// name, and the namespaces where this account may not list Secrets. One
/// list across the cluster when the account may (`--credential-namespaces
/// '*'`), else one per namespace, as when they were `scoped` by
/// `--namespace`: privatize's Secret rights are per namespace (DESIGN §11).
async fn managed_secrets(
    client: &Client,
    namespaces: &BTreeSet<String>,
    scoped: bool,
) -> Result<(BTreeMap<(String, String), Secret>, BTreeSet<String>)> {
    let mut secrets = BTreeMap::new();
    if !scoped {
        match list_managed(&Api::all(client.clone()), "every namespace").await {
            Ok(found) => {
                for secret in found {
                    let namespace = secret.namespace().unwrap_or_default();
                    if namespaces.contains(&namespace) {
                        secrets.insert((namespace, secret.name_any()), secret);
                    }
                }
                return Ok((secrets, BTreeSet::new()));
            }
            Err(ListError::Forbidden) => {
                tracing::debug!("no cluster-wide Secret rights: listing namespace by namespace")
            }
            Err(ListError::Other(err)) => return Err(err),
        }
    }
    let mut unbound = BTreeSet::new();
    for namespace in namespaces {
        match list_managed(&Api::namespaced(client.clone(), namespace), namespace).await {
            Ok(found) => {
                for secret in found {
                    secrets.insert((namespace.clone(), secret.name_any()), secret);
                }
            }
            Err(ListError::Forbidden) => {
                unbound.insert(namespace.clone());
            }
            Err(ListError::Other(err)) => return Err(err),
        }
    }
    Ok((secrets, unbound))
}

/// Why a list failed: refused by RBAC, or anything else.
enum ListError {
    Forbidden,
    Other(anyhow::Error),
}

/// The managed Secrets (either label scheme) one Api sees.
async fn list_managed(api: &Api<Secret>, place: &str) -> Result<Vec<Secret>, ListError> {
    let mut found = Vec::new();
    for (key, value) in [MANAGED_LABEL, ECR_ANYWHERE_MANAGED_LABEL] {
        let selector = format!("{key}={value}");
        match list_all(api, &selector).await {
            Ok(items) => found.extend(items),
            Err(err) => {
                if matches!(&err, kube::Error::Api(status) if status.code == 403) {
                    return Err(ListError::Forbidden);
                }
                return Err(ListError::Other(anyhow::Error::new(err).context(format!(
                    "listing Secrets labelled {selector} in {place}"
                ))));
            }
        }
    }
    Ok(found)
}

async fn list_all<K>(api: &Api<K>, selector: &str) -> kube::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().labels(selector).limit(PAGE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await?;
        items.extend(page.items);
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(items);
        }
    }
}

/// Creates the managed pull Secret in `namespace`; serve writes its login
/// right after. `None` when a Secret of that name exists already (not a
/// managed one, or it would have been listed): it is left alone.
async fn ensure(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Duration,
) -> Option<std::result::Result<Done, Failed>> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let secret = crate::mutate::secrets::new_pull_secret(namespace, name);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let failed = |reason: String| Failed {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason,
    };
    match api.create(&params, &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::warn!(
                namespace,
                secret = name,
                "a Secret of the pull Secret's name exists and is not managed: left alone"
            );
            return None;
        }
        Err(err) => return Some(Err(failed(format!("creating it: {}", message(&err))))),
    };
    Some(match written(&api, name, None, wait).await {
        Ok((back, _)) => {
            tracing::info!(namespace, secret = name, "managed pull Secret created");
            Ok(done(&back))
        }
        Err(reason) => Err(failed(format!("created, but {reason}"))),
    })
}

/// Reads a Secret back until serve has written its login (`check_refreshed`
/// holds) or `wait` is over; the last reason otherwise.
async fn written(
    api: &Api<Secret>,
    name: &str,
    before: Option<SystemTime>,
    wait: Duration,
) -> std::result::Result<(Secret, String), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    loop {
        let back = api
            .get(name)
            .await
            .map_err(|err| format!("reading it back: {}", message(&err)))?;
        match check_refreshed(&back, before, SystemTime::now()) {
            Ok(expires_at) => return Ok((back, expires_at)),
            Err(reason) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "after {}: {reason}",
                    humantime::format_duration(wait)
                ))
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Asks serve to write a fresh login into one Secret and checks it did.
async fn refresh_one(
    client: &Client,
    secret: Secret,
    reason: String,
    requested_at: &str,
    wait: Duration,
) -> std::result::Result<Done, Failed> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    let failed = |reason: String| Failed {
        namespace: namespace.clone(),
        name: name.clone(),
        reason,
    };
    let before = secret
        .annotations()
        .get(REFRESHED_AT)
        .and_then(|t| parse_time(t));
    let api = Api::<Secret>::namespaced(client.clone(), &namespace);
    let patch = json!({"metadata": {"annotations": {REFRESH_REQUESTED_AT: requested_at}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    if let Err(err) = api.patch(&name, &params, &Patch::Merge(&patch)).await {
        return Err(failed(format!("requesting a refresh: {}", message(&err))));
    }
    let (back, expires_at) = written(&api, &name, before, wait).await.map_err(failed)?;
    tracing::info!(
        namespace,
        secret = name,
        reason,
        expires_at,
        "managed Secret refreshed"
    );
    Ok(done(&back))
}

fn done(secret: &Secret) -> Done {
    Done {
        namespace: secret.namespace().unwrap_or_default(),
        name: secret.name_any(),
        expires_at: secret
            .annotations()
            .get(EXPIRES_AT)
            .cloned()
            .unwrap_or_default(),
    }
}

/// The apiserver's own message for API errors (it names the webhook and its
/// failure), the error chain otherwise.
fn message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn print(summary: &Summary, format: OutputFormat) -> Result<()> {
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string(summary).context("writing JSON output")?
        ),
        OutputFormat::Text => {
            let mut line = format!(
                "{} refreshed, {} fresh, {} failed",
                summary.refreshed.len(),
                summary.fresh.len(),
                summary.failed.len()
            );
            if !summary.created.is_empty() {
                line.push_str(&format!(", {} created", summary.created.len()));
            }
            if !summary.unbound.is_empty() {
                line.push_str(&format!(
                    "; skipped (no RoleBinding of privatize-credentials): {}",
                    summary.unbound.join(", ")
                ));
            }
            println!("{line}");
            for failed in &summary.failed {
                println!(
                    "failed: Secret {}/{}: {}",
                    failed.namespace, failed.name, failed.reason
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn secret(annotations: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn at(text: &str) -> SystemTime {
        parse_time(text).unwrap()
    }

    #[test]
    fn due_when_expiry_is_missing_unreadable_or_within_the_window() {
        let now = at("2026-11-30T00:00:00Z");
        let six = Duration::from_secs(6 * 3600);
        let due =
            |annotations: &[(&str, &str)]| refresh_reason(&secret(annotations), now, six, false);
        assert_eq!(due(&[]), Some("no privatize.io/expires-at".into()));
        assert_eq!(
            due(&[(EXPIRES_AT, "soon")]),
            Some("unreadable privatize.io/expires-at \"soon\"".into())
        );
        assert_eq!(
            due(&[(EXPIRES_AT, "2026-11-30T05:59:59Z")]),
            Some("expires at 2026-11-30T05:59:59Z".into())
        );
        assert_eq!(
            due(&[(EXPIRES_AT, "2026-11-29T23:00:00.000Z")]),
            Some("expires at 2026-11-29T23:00:00.000Z".into())
        );
        assert_eq!(due(&[(EXPIRES_AT, "2026-11-30T06:00:01Z")]), None);
        assert_eq!(
            refresh_reason(
                &secret(&[(EXPIRES_AT, "2027-01-01T00:00:00Z")]),
                now,
                six,
                true
            ),
            Some("--force".into())
        );
    }

    #[test]
    fn refreshed_means_refreshed_at_moved_forward_and_expiry_ahead() {
        let now = at("2026-11-30T00:00:00Z");
        let before = Some(at("2026-11-29T23:00:00.000Z"));
        let ok = secret(&[
            (REFRESHED_AT, "2026-11-30T00:00:00.500Z"),
            (EXPIRES_AT, "2026-11-30T12:00:00.000Z"),
        ]);
        assert_eq!(
            check_refreshed(&ok, before, now),
            Ok("2026-11-30T12:00:00.000Z".into())
        );
        let same = secret(&[
            (REFRESHED_AT, "2026-11-29T23:00:00.000Z"),
            (EXPIRES_AT, "2026-11-30T12:00:00.000Z"),
        ]);
        assert!(check_refreshed(&same, before, now)
            .unwrap_err()
            .starts_with("serve wrote no fresh login: privatize.io/refreshed-at is still 2026-11-29T23:00:00.000Z"));
        let past = secret(&[
            (REFRESHED_AT, "2026-11-30T00:00:00.500Z"),
            (EXPIRES_AT, "2026-11-29T12:00:00Z"),
        ]);
        assert_eq!(
            check_refreshed(&past, before, now),
            Err(
                "privatize.io/expires-at 2026-11-29T12:00:00Z is in the past after the refresh"
                    .into()
            )
        );
        assert_eq!(
            check_refreshed(&secret(&[]), None, now),
            Err("serve wrote no login: no privatize.io/refreshed-at (is serve running, and may it read Secrets here: a RoleBinding of privatize-credentials?)".into())
        );
    }
}
