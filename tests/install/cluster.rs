//! A kube-apiserver + etcd of one test's own (`testbed/kube/up` with its own
//! state dir and ports), stopped and purged on drop. An install registers a
//! cluster-wide webhook configuration and a real serve watches pods
//! cluster-wide: on the shared apiserver both would act on other tests' objects.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::common::unique;

const TESTBED_KUBE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/kube");

pub struct PrivateCluster {
    /// The admin kubeconfig (`system:masters`).
    pub kubeconfig: PathBuf,
    pub client: Client,
    state: Stopper,
}

/// Distinct free loopback ports (held open together so none repeats).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = std::env::temp_dir().join(format!("privatize-kube-{}", unique()));
        let [api, etcd, peer] = free_ports();
        let out = Command::new(format!("{TESTBED_KUBE}/up"))
            .env("PRIVATIZE_KUBE_DIR", &dir)
            .env("KUBE_API_PORT", api.to_string())
            .env("KUBE_ETCD_PORT", etcd.to_string())
            .env("KUBE_ETCD_PEER_PORT", peer.to_string())
            .output()
            .expect("running testbed/kube/up");
        // Made before the check, so a half-started cluster is stopped too.
        let state = Stopper(dir.clone());
        assert!(
            out.status.success(),
            "testbed/kube/up for a private cluster failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = dir.join("kubeconfig");
        let client = client_for(&Kubeconfig::read_from(&kubeconfig).unwrap()).await;
        Self {
            kubeconfig,
            client,
            state,
        }
    }

    /// A kubeconfig for this cluster that authenticates as a ServiceAccount
    /// (a TokenRequest for it), written next to the admin one.
    pub async fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> PathBuf {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued: TokenRequest =
            Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
                .create_subresource("token", account, &PostParams::default(), &request)
                .await
                .unwrap();
        let token = issued.status.unwrap().token;
        let admin = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cluster = admin.clusters[0].cluster.clone().unwrap();
        let ca = cluster.certificate_authority_data.unwrap();
        let kubeconfig = serde_yaml_ng::to_string(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "private", "cluster": {"server": cluster.server, "certificate-authority-data": ca}}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "private", "context": {"cluster": "private", "user": account}}],
            "current-context": "private"
        }))
        .unwrap();
        let path = self
            .state
            .0
            .join(format!("kubeconfig-{namespace}-{account}"));
        std::fs::write(&path, kubeconfig).unwrap();
        path
    }
}

async fn client_for(kubeconfig: &Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig.clone(), &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Stops the private cluster's processes (by their PID files) and removes its state.
struct Stopper(PathBuf);

impl Drop for Stopper {
    fn drop(&mut self) {
        let _ = Command::new(format!("{TESTBED_KUBE}/down"))
            .arg("--purge")
            .env("PRIVATIZE_KUBE_DIR", &self.0)
            .output();
    }
}
