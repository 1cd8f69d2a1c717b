//! Least-privilege RBAC: each identity gets only the API calls its code
//! makes, bound to its own ServiceAccount. The copy Jobs' ServiceAccount gets
//! none at all (a copy talks to registries, never to Kubernetes). Secrets
//! only where enabled (DESIGN §11): serve and the CronJob get Secret rights
//! from the ClusterRole `privatize-credentials`, bound per namespace
//! (`--credential-namespaces`), or cluster-wide for `*`; nowhere else may
//! privatize read or write a Secret.

use anyhow::Result;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{meta, strings, Settings, NAME, REFRESH_ACCOUNT, SERVER_ACCOUNT, TLS_SECRET};
use crate::copy_job::CA_CONFIG_MAP;
use crate::k8s::Object;

/// The server's ClusterRole and its namespaced Role (same name, other kind).
pub const SERVER_ROLE: &str = "privatize-webhook";
/// The refresh CronJob's ClusterRole.
pub const REFRESH_ROLE: &str = "privatize-refresh";
/// The Secret rights, bound where ECR credentials are enabled.
pub const CREDENTIALS_ROLE: &str = "privatize-credentials";

/// RBAC objects of earlier versions, deleted by install and uninstall: a
/// ClusterRole that gave the copy Jobs' ServiceAccount pod and Event rights,
/// and the server's Role under its old name.
pub const RETIRED_CLUSTER_ROLE: &str = "privatize-copy-job";
pub const RETIRED_ROLE: &str = "privatize-webhook-jobs";

/// The ClusterRoles and their Bindings, then the server's Role and RoleBinding.
pub(super) fn objects(s: &Settings) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (name, account, rules) in [
        (SERVER_ROLE, SERVER_ACCOUNT, server_cluster_rules(s)),
        (REFRESH_ROLE, REFRESH_ACCOUNT, refresh_rules()),
    ] {
        out.push(Object::new(&ClusterRole {
            metadata: meta(name, None),
            rules: Some(rules),
            ..Default::default()
        })?);
        out.push(Object::new(&ClusterRoleBinding {
            metadata: meta(name, None),
            role_ref: role_ref("ClusterRole", name),
            subjects: Some(vec![subject(s, account)]),
        })?);
    }
    out.push(Object::new(&ClusterRole {
        metadata: meta(CREDENTIALS_ROLE, None),
        rules: Some(credentials_rules()),
        ..Default::default()
    })?);
    let both = vec![subject(s, SERVER_ACCOUNT), subject(s, REFRESH_ACCOUNT)];
    if s.credential_namespaces.iter().any(|n| n == "*") {
        out.push(Object::new(&ClusterRoleBinding {
            metadata: meta(CREDENTIALS_ROLE, None),
            role_ref: role_ref("ClusterRole", CREDENTIALS_ROLE),
            subjects: Some(both),
        })?);
    } else {
        for namespace in &s.credential_namespaces {
            out.push(Object::new(&RoleBinding {
                metadata: meta(CREDENTIALS_ROLE, Some(namespace)),
                role_ref: role_ref("ClusterRole", CREDENTIALS_ROLE),
                subjects: Some(both.clone()),
            })?);
        }
    }
    out.push(Object::new(&Role {
        metadata: meta(SERVER_ROLE, Some(&s.namespace)),
        rules: Some(server_namespace_rules()),
    })?);
    out.push(Object::new(&RoleBinding {
        metadata: meta(SERVER_ROLE, Some(&s.namespace)),
        role_ref: role_ref("Role", SERVER_ROLE),
        subjects: Some(vec![subject(s, SERVER_ACCOUNT)]),
    })?);
    Ok(out)
}

/// What earlier versions installed and this one no longer does, as objects
/// to delete.
pub(super) fn retired(s: &Settings) -> Result<Vec<Object>> {
    Ok(vec![
        Object::new(&ClusterRoleBinding {
            metadata: meta(RETIRED_CLUSTER_ROLE, None),
            ..Default::default()
        })?,
        Object::new(&ClusterRole {
            metadata: meta(RETIRED_CLUSTER_ROLE, None),
            ..Default::default()
        })?,
        Object::new(&RoleBinding {
            metadata: meta(RETIRED_ROLE, Some(&s.namespace)),
            ..Default::default()
        })?,
        Object::new(&Role {
            metadata: meta(RETIRED_ROLE, Some(&s.namespace)),
            ..Default::default()
        })?,
    ])
}

/// `serve` across the cluster: watch and patch the pods it gated or marked
/// copy-pending, and read one again before a fallback release (gate.rs,
/// sweep.rs); watch namespaces for the ones enabled for ECR credentials and
/// read one's labels for the pull Secret (credentials.rs, pods.rs); record
/// Events on pods, Secrets and namespaces (kube's Recorder: events.k8s.io/v1,
/// create then patch); read and patch the caBundle of its own webhook
/// configuration when it renews its certificate (renew.rs). With
/// `--platforms auto` only, list and watch Nodes (platforms.rs: a
/// metadata-only watch of their `kubernetes.io/os` and `kubernetes.io/arch`
/// labels, the platforms copies keep); with `all` or a list serve never
/// reads a Node, so it may not. No Secret right here: those come from
/// `privatize-credentials`.
fn server_cluster_rules(s: &Settings) -> Vec<PolicyRule> {
    let mut rules = vec![
        rule([""], ["pods"], &["get", "list", "watch", "patch"]),
        rule([""], ["namespaces"], &["get", "list", "watch"]),
        rule(["events.k8s.io"], ["events"], &["create", "patch"]),
        PolicyRule {
            resource_names: Some(strings([NAME])),
            ..rule(
                ["admissionregistration.k8s.io"],
                ["mutatingwebhookconfigurations"],
                &["get", "patch"],
            )
        },
    ];
    if s.platforms == "auto" {
        rules.push(rule([""], ["nodes"], &["list", "watch"]));
    }
    rules
}

/// Managed pull Secrets where ECR credentials are enabled: serve watches
/// them and writes logins (credentials.rs) and creates a missing pull Secret
/// (`--require-pull-secret`); `refresh-secrets` lists, reads, asks for
/// refreshes and creates them (`--ensure`). The ValidatingAdmissionPolicy
/// `privatize-secrets` lets these accounts write managed dockerconfigjson
/// Secrets only.
fn credentials_rules() -> Vec<PolicyRule> {
    vec![rule(
        [""],
        ["secrets"],
        &["get", "list", "watch", "create", "patch"],
    )]
}

/// `serve` in its own namespace: the copy Jobs (jobs.rs creates, reads and
/// replaces finished ones; gate.rs lists and watches), its own pod
/// (setup.rs reads its image and what copy Jobs inherit), the copy Jobs'
/// CA ConfigMap (copy_ca.rs checks it at start, by name only) and its own
/// TLS Secret, read and replaced when it renews the certificate (renew.rs).
fn server_namespace_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            ["batch"],
            ["jobs"],
            &["create", "get", "list", "watch", "delete"],
        ),
        rule([""], ["pods"], &["get"]),
        PolicyRule {
            resource_names: Some(strings([CA_CONFIG_MAP])),
            ..rule([""], ["configmaps"], &["get"])
        },
        PolicyRule {
            resource_names: Some(strings([TLS_SECRET])),
            ..rule([""], ["secrets"], &["get", "update"])
        },
    ]
}

/// `refresh-secrets`: the enabled namespaces (its Secret rights come from
/// `privatize-credentials`).
fn refresh_rules() -> Vec<PolicyRule> {
    vec![rule([""], ["namespaces"], &["list"])]
}

fn rule<const G: usize, const R: usize>(
    groups: [&str; G],
    resources: [&str; R],
    verbs: &[&str],
) -> PolicyRule {
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn subject(s: &Settings, account: &str) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: account.into(),
        namespace: Some(s.namespace.clone()),
        ..Default::default()
    }
}
