//! Least-privilege RBAC: each identity (server, copy Jobs, CronJob) gets only
//! the verbs its role uses, bound to its own ServiceAccount.

use anyhow::Result;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{meta, strings, Settings, COPY_JOB_ACCOUNT, REFRESH_ACCOUNT, SERVER_ACCOUNT};
use crate::k8s::Object;

/// The server's namespaced Role: it creates and watches its copy Jobs.
const JOBS_ROLE: &str = "privatize-webhook-jobs";

/// The ClusterRoles and their Bindings, then the server's Role and RoleBinding.
pub(super) fn objects(s: &Settings) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (name, account, rules) in cluster_roles() {
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
    out.push(Object::new(&Role {
        metadata: meta(JOBS_ROLE, Some(&s.namespace)),
        rules: Some(vec![rule(
            ["batch"],
            ["jobs"],
            &["create", "get", "list", "watch"],
        )]),
    })?);
    out.push(Object::new(&RoleBinding {
        metadata: meta(JOBS_ROLE, Some(&s.namespace)),
        role_ref: role_ref("Role", JOBS_ROLE),
        subjects: Some(vec![subject(s, SERVER_ACCOUNT)]),
    })?);
    Ok(out)
}

/// ClusterRole name, the ServiceAccount bound to it, and its rules.
fn cluster_roles() -> [(&'static str, &'static str, Vec<PolicyRule>); 3] {
    let events = || rule(["", "events.k8s.io"], ["events"], &["create", "patch"]);
    [
        (
            "privatize-webhook",
            SERVER_ACCOUNT,
            vec![
                rule([""], ["pods"], &["get", "list", "watch", "patch"]),
                rule([""], ["namespaces"], &["get", "list", "watch"]),
                PolicyRule {
                    resource_names: Some(strings(["privatize-ecr"])),
                    ..rule([""], ["secrets"], &["get"])
                },
                events(),
            ],
        ),
        (
            "privatize-copy-job",
            COPY_JOB_ACCOUNT,
            vec![rule([""], ["pods"], &["get", "list", "patch"]), events()],
        ),
        (
            "privatize-refresh",
            REFRESH_ACCOUNT,
            vec![
                rule([""], ["namespaces"], &["get", "list"]),
                rule([""], ["secrets"], &["get", "list", "create", "patch"]),
            ],
        ),
    ]
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
