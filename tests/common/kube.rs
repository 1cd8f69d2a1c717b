//! Harness for the real kube-apiserver of the testbed (`testbed/kube/up`):
//! a client from its kubeconfig, and a fresh namespace per test that is
//! deleted afterwards, even when the test fails.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

/// Path of the testbed's kubeconfig.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var("PRIVATIZE_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kube/kubeconfig")
        })
}

/// A client for the testbed's apiserver.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "kube-apiserver testbed not running ({}: {e}); start it with `eval \"$(testbed/kube/up)\"`, or run `bash scripts/test`",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    let address = format!(
        "{}:{}",
        config.cluster_url.host().unwrap_or("?"),
        config.cluster_url.port_u16().unwrap_or(443)
    );
    super::require_listening("kube-apiserver", &address, "eval \"$(testbed/kube/up)\"");
    Client::try_from(config).expect("kube client")
}

/// A namespace of its own for one test; deleted on drop.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(test: &str) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = client().await;
        // A name can repeat one of an earlier run still being deleted on a
        // long-lived testbed (no namespace controller): then take another.
        for _ in 0..5 {
            let name = format!(
                "t-{}-{}",
                test.replace('_', "-").chars().take(40).collect::<String>(),
                super::unique() % 1_000_000
            );
            let namespace: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
            match Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
            {
                Ok(_) => return Self { name, client },
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(err) => panic!("creating test namespace {name}: {err}"),
            }
        }
        panic!("creating a test namespace for {test}: five names taken");
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        delete_from_drop::<Namespace>(&self.name);
    }
}

/// Runs async work from code that cannot await (a `Drop`, a sync helper):
/// a fresh runtime on another thread, so it works inside a test's runtime too.
pub fn block_on_thread<F, T>(work: impl FnOnce() -> F + Send + 'static) -> T
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work())
    })
    .join()
    .expect("the blocking helper's thread panicked")
}

/// Deletes a cluster-scoped object from a `Drop` (which cannot await), with
/// a client of its own. Absence is fine.
pub fn delete_from_drop<K>(name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = name.to_string();
    block_on_thread(|| async move {
        let _ = Api::<K>::all(client().await)
            .delete(&name, &DeleteParams::background())
            .await;
    });
}

/// `privatize` pointed at the testbed apiserver.
pub fn privatize() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatize"));
    cmd.env("KUBECONFIG", kubeconfig_path())
        .env("PRIVATIZE_PROGRESS", "never");
    cmd
}

/// Server-side dry-run of every document in a rendered YAML stream: the
/// apiserver validates each against its schema and admission, storing nothing.
pub async fn server_side_dry_run(client: &Client, yaml: &str) -> Vec<String> {
    use kube::api::{DynamicObject, Patch, PatchParams};
    use kube::discovery::{pinned_kind, Scope};
    use serde::Deserialize;
    let mut applied = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value = serde_json::Value::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        let object: DynamicObject = serde_json::from_value(value).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &types.api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, &types.kind);
        let (resource, caps) = pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                Api::namespaced_with(client.clone(), &object.namespace().unwrap(), &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let params = PatchParams::apply("privatize-validate").dry_run().force();
        api.patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("{} {} rejected: {e}", types.kind, object.name_any()));
        applied.push(format!("{}/{}", types.kind, object.name_any()));
    }
    applied
}

/// A client for the apiserver of another kubeconfig (a test's own cluster).
pub async fn client_from(kubeconfig: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("reading the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("kube client")
}

/// Creates or updates the copy Jobs' CA ConfigMap (`privatize-ca`, key
/// `ca.pem`) in `namespace`, as `install --ca-file` does.
pub async fn put_ca_config_map(client: &Client, namespace: &str, pem: &str) {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": privatize::copy_job::CA_CONFIG_MAP},
        "data": {(privatize::copy_job::CA_KEY): pem}
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(
            privatize::copy_job::CA_CONFIG_MAP,
            &PatchParams::apply("privatize-tests").force(),
            &Patch::Apply(&config_map),
        )
        .await
        .expect("writing the CA ConfigMap");
}

/// From code that cannot await: the namespace (created when absent) gets the
/// CA ConfigMap with the testbed target's CA.
pub fn put_testbed_ca_blocking(namespace: &str) {
    let namespace = namespace.to_string();
    let pem = std::fs::read_to_string(&super::testbed().env["TARGET_CA_FILE"]).unwrap();
    block_on_thread(|| async move {
        let client = client().await;
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
        let _ = Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &object)
            .await;
        put_ca_config_map(&client, &namespace, &pem).await;
    });
}

/// The data of a ConfigMap, read from code that cannot await.
pub fn config_map_data_blocking(
    kubeconfig: &std::path::Path,
    namespace: &str,
    name: &str,
) -> std::collections::BTreeMap<String, String> {
    let (kubeconfig, namespace, name) = (
        kubeconfig.to_path_buf(),
        namespace.to_string(),
        name.to_string(),
    );
    block_on_thread(|| async move {
        let client = client_from(&kubeconfig).await;
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, &namespace)
            .get(&name)
            .await
            .unwrap_or_else(|e| panic!("reading ConfigMap {namespace}/{name}: {e}"))
            .data
            .unwrap_or_default()
    })
}
