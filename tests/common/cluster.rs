//! Harness for the cluster testbed (`testbed/cluster/up`): a one-node
//! Kubernetes cluster of the testbed's own (etcd, kube-apiserver,
//! controller-manager, scheduler, containerd, kubelet). `up` is idempotent,
//! so every test calls it; the cluster stays running for the next test.
//! Pod logs are read from the kubelet's pod-log files (`kubectl logs` cannot
//! reach this kubelet).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::Client;

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testbed/cluster");

/// The runnable test image (busybox-static; an OCI index of linux/amd64 and
/// linux/arm64), in the testbed's source registry.
pub fn busybox_image() -> String {
    format!("{}/testbed/busybox:1.36", super::testbed().source())
}

/// The node's name.
pub const NODE: &str = "privatize-node";

pub struct Cluster {
    /// State dir (`PRIVATIZE_CLUSTER_DIR`, default `<repo>/target/cluster`).
    pub state: PathBuf,
    /// The admin kubeconfig (`system:masters`) of the cluster's own apiserver.
    pub kubeconfig: PathBuf,
}

/// The state dir `testbed/cluster/{up,down}` use.
pub fn state_dir() -> PathBuf {
    std::env::var_os("PRIVATIZE_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cluster"))
}

/// Runs a `testbed/cluster/` script; on failure panics with its last
/// message line (e.g. "cluster/up: the source registry ... does not answer").
fn run(script: &str, args: &[&str]) -> String {
    let out = Command::new(format!("{SCRIPTS}/{script}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("testbed/cluster/{script} could not run: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{stderr}");
        let reason = stderr
            .lines()
            .rev()
            .find(|l| ["cluster/", "kube/"].iter().any(|p| l.starts_with(p)) && !l.contains("----"))
            .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("no message");
        panic!("testbed/cluster/{script} failed ({}): {reason}", out.status);
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Brings the cluster up (or finds it up) and returns where it is.
pub fn up() -> Cluster {
    let stdout = run("up", &[]);
    let kubeconfig = stdout
        .lines()
        .find_map(|l| l.strip_prefix("export KUBECONFIG="))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("testbed/cluster/up printed no KUBECONFIG: {stdout:?}"));
    Cluster {
        state: state_dir(),
        kubeconfig,
    }
}

/// Stops the cluster and reverts its host changes (`--purge`: and its state).
pub fn down(purge: bool) {
    run("down", if purge { &["--purge"] } else { &[] });
}

impl Cluster {
    pub async fn client(&self) -> Client {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        super::kube::client_from(&self.kubeconfig).await
    }

    /// The kubelet's pod-log dir: `<ns>_<pod>_<uid>/<container>/<restart>.log`.
    pub fn pod_logs(&self) -> PathBuf {
        self.state.join("pod-logs")
    }

    /// What a container wrote (stdout and stderr, CRI log lines joined), from
    /// its first run's log file; None while there is no such file.
    pub fn container_log(&self, namespace: &str, pod_uid: &str, container: &str) -> Option<String> {
        let dir = std::fs::read_dir(self.pod_logs()).ok()?.find_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            (name.starts_with(&format!("{namespace}_")) && name.ends_with(&format!("_{pod_uid}")))
                .then_some(name)
        })?;
        let text = std::fs::read_to_string(self.pod_logs().join(dir).join(container).join("0.log"))
            .ok()?;
        Some(cri_log_text(&text))
    }
}

/// The payload of CRI log lines (`TIMESTAMP STREAM F|P MESSAGE`): full
/// lines end in a newline, partial ones (`P`) do not.
pub fn cri_log_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, message) = (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(message.unwrap_or(""));
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// Waits until the namespace's `default` ServiceAccount exists (the
/// controller-manager makes it; ServiceAccount admission rejects pods before).
pub async fn wait_for_default_service_account(client: &Client, namespace: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    while accounts.get_opt("default").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "no ServiceAccount {namespace}/default after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}
