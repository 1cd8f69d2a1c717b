//! Where privatize may touch Secrets (DESIGN §11 "Secrets only where
//! enabled"): install binds the ClusterRole `privatize-credentials` only in
//! namespaces that exist (one named but missing is reported, not created),
//! and removes the bindings of namespaces no longer named; uninstall removes
//! them all.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};

use super::manifests::CREDENTIALS_ROLE;
use crate::k8s::MANAGED_BY;
use crate::mutate::secrets::{grant_command, ECR_ANYWHERE_NAMESPACE_LABEL, NAMESPACE_LABEL};

/// The namespaces of `wanted` that exist (`*` stays as it is); each missing
/// one is named on stderr with what to do.
pub async fn existing(client: &Client, wanted: &[String]) -> Result<Vec<String>> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut found = Vec::new();
    for namespace in wanted {
        if namespace == "*" {
            found.push(namespace.clone());
            continue;
        }
        let there = api
            .get_opt(namespace)
            .await
            .with_context(|| format!("reading namespace {namespace}"))?;
        match there {
            Some(_) => found.push(namespace.clone()),
            None => eprintln!(
                "warning: --credential-namespaces names {namespace}, which does not exist: no RoleBinding there; run install again once it does, or let its owner bind privatize-credentials"
            ),
        }
    }
    Ok(found)
}

/// Warns, for each live namespace labelled for ECR credentials (either scheme)
/// that neither `bound` names nor a RoleBinding `privatize-credentials` of
/// its owner covers, that serve will write no logins there, and how to
/// grant it (an upgrade from a version whose accounts could touch every
/// Secret lands here).
pub async fn warn_unbound(client: &Client, bound: &[String], namespace: &str) -> Result<()> {
    if bound.iter().any(|n| n == "*") {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let mut labelled = std::collections::BTreeSet::new();
    for (key, value) in [NAMESPACE_LABEL, ECR_ANYWHERE_NAMESPACE_LABEL] {
        let selector = format!("{key}={value}");
        for ns in api
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing namespaces labelled {selector}"))?
        {
            // A namespace being deleted needs no grant.
            if ns.metadata.deletion_timestamp.is_none() {
                labelled.insert(ns.name_any());
            }
        }
    }
    for name in labelled.into_iter().filter(|n| !bound.contains(n)) {
        let own = Api::<RoleBinding>::namespaced(client.clone(), &name)
            .get_opt(CREDENTIALS_ROLE)
            .await
            .with_context(|| format!("reading RoleBinding {name}/{CREDENTIALS_ROLE}"))?;
        if own.is_none() {
            eprintln!(
                "warning: namespace {name} is labelled for ECR credentials, but privatize may not touch its Secrets: add it to --credential-namespaces, or let its owner run: {}",
                grant_command(&name, namespace)
            );
        }
    }
    Ok(())
}

/// Deletes privatize's `privatize-credentials` bindings that `kept` does not
/// name (all of them for an empty list); `said` is the report.
pub async fn unbind_others(client: &Client, kept: &[String], said: &str) -> Result<()> {
    let managed = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let everywhere = kept.iter().any(|n| n == "*");
    let bindings: Api<RoleBinding> = Api::all(client.clone());
    for binding in bindings
        .list(&managed)
        .await
        .context("listing privatize's RoleBindings")?
    {
        let namespace = binding.namespace().unwrap_or_default();
        if binding.name_any() != CREDENTIALS_ROLE || (!everywhere && kept.contains(&namespace)) {
            continue;
        }
        Api::<RoleBinding>::namespaced(client.clone(), &namespace)
            .delete(CREDENTIALS_ROLE, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting RoleBinding {namespace}/{CREDENTIALS_ROLE}"))?;
        eprintln!(
            "{:<55} {said}",
            format!("RoleBinding/{CREDENTIALS_ROLE} in {namespace}")
        );
    }
    if !everywhere {
        let cluster: Api<ClusterRoleBinding> = Api::all(client.clone());
        let found = cluster
            .get_opt(CREDENTIALS_ROLE)
            .await
            .context("reading ClusterRoleBinding privatize-credentials")?;
        let ours = found.is_some_and(|b| {
            b.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
        });
        if ours {
            cluster
                .delete(CREDENTIALS_ROLE, &DeleteParams::default())
                .await
                .context("deleting ClusterRoleBinding privatize-credentials")?;
            eprintln!(
                "{:<55} {said}",
                format!("ClusterRoleBinding/{CREDENTIALS_ROLE}")
            );
        }
    }
    Ok(())
}
