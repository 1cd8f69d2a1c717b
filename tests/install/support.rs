//! Harness of the install tests: running install/uninstall, listing what an
//! install is made of, playing the Deployment controller, and the exact RBAC.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::common::kube::privatize;
use crate::common::{stderr, unique};

pub const MANAGED: &str = "app.kubernetes.io/managed-by=privatize";
pub const URL: &str = "https://127.0.0.1:9";
/// The target registry an install is given unless a test names one.
pub const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";

/// `install --no-wait` with the test image and, unless `extra` names them,
/// the test URL and target registry.
pub fn install(namespace: &str, extra: &[&str]) -> std::process::Output {
    let mut cmd = privatize();
    cmd.args([
        "install",
        "--no-wait",
        "--namespace",
        namespace,
        "--image",
        "registry.example/privatize:test",
    ])
    .args(extra);
    if !extra.contains(&"--webhook-url") {
        cmd.args(["--webhook-url", URL]);
    }
    if !extra.contains(&"--target-registry") {
        cmd.args(["--target-registry", TARGET]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "install failed: {}", stderr(&out));
    out
}

pub fn uninstall(namespace: &str) {
    let out = privatize()
        .args(["uninstall", "--namespace", namespace])
        .output()
        .unwrap();
    assert!(out.status.success(), "uninstall failed: {}", stderr(&out));
}

/// A namespace to install into; uninstalled on drop, so a failing test never
/// leaves the cluster-wide webhook configuration behind on the shared apiserver.
pub struct InstallNamespace(pub String);

impl InstallNamespace {
    pub fn new() -> Self {
        Self(format!("privatize-{}", unique() % 1_000_000_007))
    }
}

impl Drop for InstallNamespace {
    fn drop(&mut self) {
        let _ = privatize()
            .args(["uninstall", "--namespace", &self.0])
            .output();
    }
}

/// name → resourceVersion of every privatize-managed object of one kind.
pub async fn versions<K>(client: &Client, namespace: Option<&str>) -> BTreeMap<String, String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap();
    list.items
        .iter()
        .map(|o| {
            (
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.resource_version().unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn cluster_versions<K>(client: &Client) -> BTreeMap<String, String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| {
            (
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.resource_version().unwrap_or_default(),
            )
        })
        .collect()
}

/// Every privatize-managed object the install is made of.
pub async fn everything(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    all.extend(versions::<ServiceAccount>(client, Some(ns)).await);
    all.extend(versions::<Secret>(client, Some(ns)).await);
    all.extend(versions::<ConfigMap>(client, Some(ns)).await);
    all.extend(versions::<Service>(client, Some(ns)).await);
    all.extend(versions::<Deployment>(client, Some(ns)).await);
    all.extend(versions::<PodDisruptionBudget>(client, Some(ns)).await);
    all.extend(versions::<CronJob>(client, Some(ns)).await);
    all.extend(versions::<Role>(client, Some(ns)).await);
    all.extend(versions::<RoleBinding>(client, Some(ns)).await);
    all.extend(
        cluster_versions::<Namespace>(client)
            .await
            .into_iter()
            .filter(|(k, _)| k.ends_with(&format!("/{ns}"))),
    );
    all.extend(cluster_versions::<ClusterRole>(client).await);
    all.extend(cluster_versions::<ClusterRoleBinding>(client).await);
    all.extend(cluster_versions::<MutatingWebhookConfiguration>(client).await);
    all.extend(cluster_versions::<ValidatingAdmissionPolicy>(client).await);
    all.extend(cluster_versions::<ValidatingAdmissionPolicyBinding>(client).await);
    all
}

/// Every object an install is made of, as `everything` lists them (sorted).
pub fn installed_objects(ns: &str) -> Vec<String> {
    let mut all: Vec<String> = [
        "ClusterRole/privatize-credentials",
        "ClusterRole/privatize-refresh",
        "ClusterRole/privatize-webhook",
        "ClusterRoleBinding/privatize-refresh",
        "ClusterRoleBinding/privatize-webhook",
        "CronJob/privatize-refresh-secrets",
        "Deployment/privatize",
        "MutatingWebhookConfiguration/privatize",
        "PodDisruptionBudget/privatize",
        "Role/privatize-webhook",
        "RoleBinding/privatize-webhook",
        "Secret/privatize-tls",
        "Service/privatize",
        "ServiceAccount/privatize",
        "ServiceAccount/privatize-refresh",
        "ServiceAccount/privatize-webhook",
        "ValidatingAdmissionPolicy/privatize-secrets",
        "ValidatingAdmissionPolicy/privatize-webhook-pods",
        "ValidatingAdmissionPolicyBinding/privatize-secrets",
        "ValidatingAdmissionPolicyBinding/privatize-webhook-pods",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("Namespace/{ns}")])
    .collect();
    all.sort();
    all
}

/// Creates an RBAC object of `kind` (ClusterRole, ClusterRoleBinding, Role
/// or RoleBinding; the namespaced ones in `ns`) from JSON.
pub async fn create_rbac(client: &Client, ns: &str, kind: &str, object: serde_json::Value) {
    async fn create<K>(api: Api<K>, object: serde_json::Value)
    where
        K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        let typed: K = serde_json::from_value(object).unwrap();
        api.create(&kube::api::PostParams::default(), &typed)
            .await
            .unwrap();
    }
    let client = client.clone();
    match kind {
        "ClusterRole" => create(Api::<ClusterRole>::all(client), object).await,
        "ClusterRoleBinding" => create(Api::<ClusterRoleBinding>::all(client), object).await,
        "Role" => create(Api::<Role>::namespaced(client, ns), object).await,
        "RoleBinding" => create(Api::<RoleBinding>::namespaced(client, ns), object).await,
        other => panic!("create_rbac: unknown kind {other}"),
    }
}

/// A running `privatize` child, killed if the test fails while it runs.
pub struct Running(pub std::process::Child);

impl Running {
    pub fn still_running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// Waits up to `limit` for the exit; its status and stderr.
    pub fn finish(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        while self.still_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "privatize still running after {limit:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let status = self.0.try_wait().unwrap().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.0.stderr.take().unwrap(), &mut err).unwrap();
        (status, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Plays the Deployment controller (the testbed runs none): writes the status subresource.
pub async fn set_status(deployments: &Api<Deployment>, status: serde_json::Value) {
    deployments
        .patch_status(
            "privatize",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .unwrap();
}

/// The DER of each certificate in a PEM bundle, in order.
pub fn certificates(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap().as_ref().to_vec())
        .collect()
}

/// RBAC exactly as specified: every rule in full, so an emptied or widened
/// rule fails here. Each rule is an API call serve or refresh-secrets makes;
/// the copy Jobs' ServiceAccount is bound to nothing.
pub async fn assert_rbac_as_specified(client: &Client, ns: &str) {
    let rule = |groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]| {
        let mut rule =
            serde_json::json!({"apiGroups": groups, "resources": resources, "verbs": verbs});
        if !names.is_empty() {
            rule["resourceNames"] = serde_json::json!(names);
        }
        rule
    };
    let roles: BTreeMap<String, serde_json::Value> = Api::<ClusterRole>::all(client.clone())
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.meta().deletion_timestamp.is_none())
        .map(|r| (r.name_any(), serde_json::to_value(r.rules).unwrap()))
        .collect();
    let expected: BTreeMap<String, serde_json::Value> = [
        (
            "privatize-webhook",
            serde_json::json!([
                rule(&[""], &["pods"], &[], &["get", "list", "watch", "patch"]),
                rule(&[""], &["namespaces"], &[], &["get", "list", "watch"]),
                rule(&["events.k8s.io"], &["events"], &[], &["create", "patch"]),
                // Its own webhooks' caBundle, when it renews its certificate.
                rule(
                    &["admissionregistration.k8s.io"],
                    &["mutatingwebhookconfigurations"],
                    &["privatize"],
                    &["get", "patch"]
                ),
            ]),
        ),
        (
            "privatize-refresh",
            serde_json::json!([rule(&[""], &["namespaces"], &[], &["list"])]),
        ),
        (
            // Bound only where ECR credentials are enabled (none here).
            "privatize-credentials",
            serde_json::json!([rule(
                &[""],
                &["secrets"],
                &[],
                &["get", "list", "watch", "create", "patch"]
            )]),
        ),
    ]
    .into_iter()
    .map(|(name, rules)| (name.to_string(), rules))
    .collect();
    assert_eq!(roles, expected);
    let role = Api::<Role>::namespaced(client.clone(), ns)
        .get("privatize-webhook")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(role.rules).unwrap(),
        serde_json::json!([
            rule(
                &["batch"],
                &["jobs"],
                &[],
                &["create", "get", "list", "watch", "delete"]
            ),
            rule(&[""], &["pods"], &[], &["get"]),
            rule(&[""], &["configmaps"], &["privatize-ca"], &["get"]),
            rule(&[""], &["secrets"], &["privatize-tls"], &["get", "update"]),
        ])
    );
    // Every binding of the install, by subject: the copy Jobs' account has none.
    let mut bound: Vec<(String, String, String)> = Api::<ClusterRoleBinding>::all(client.clone())
        .list(&ListParams::default().labels(MANAGED))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|b| b.meta().deletion_timestamp.is_none())
        .map(|b| {
            assert_eq!(b.role_ref.name, b.name_any());
            (
                format!("{}/{}", b.role_ref.kind, b.role_ref.name),
                b.name_any(),
                serde_json::to_string(&b.subjects).unwrap(),
            )
        })
        .collect();
    bound.extend(
        Api::<RoleBinding>::namespaced(client.clone(), ns)
            .list(&ListParams::default().labels(MANAGED))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|b| {
                (
                    format!("{}/{}", b.role_ref.kind, b.role_ref.name),
                    b.name_any(),
                    serde_json::to_string(&b.subjects).unwrap(),
                )
            }),
    );
    bound.sort();
    let subject = |account: &str| {
        serde_json::json!([{"kind": "ServiceAccount", "name": account, "namespace": ns}])
            .to_string()
    };
    assert_eq!(
        bound,
        [
            (
                "ClusterRole/privatize-refresh".to_string(),
                "privatize-refresh".to_string(),
                subject("privatize-refresh")
            ),
            (
                "ClusterRole/privatize-webhook".to_string(),
                "privatize-webhook".to_string(),
                subject("privatize-webhook")
            ),
            (
                "Role/privatize-webhook".to_string(),
                "privatize-webhook".to_string(),
                subject("privatize-webhook")
            ),
        ]
    );
}
