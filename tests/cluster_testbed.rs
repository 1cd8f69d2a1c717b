//! The cluster testbed itself (`testbed/cluster/{up,down}`): the node gets
//! Ready, pods of the testbed's busybox image run on the host network and on
//! the pod bridge, their output lands in the kubelet's pod-log files, and
//! `down` leaves the host as it found it (no mounts, no bridge, no iptables
//! chains, the sysctls the kubelet set restored). The cluster is brought up
//! again at the end, so later tests find it running.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::cluster::{self, Cluster};

/// `key=value` lines of the sysctls `up` recorded before the kubelet first ran.
fn recorded_sysctls(cluster: &Cluster) -> BTreeMap<String, String> {
    let path = cluster.state.join("host/sysctl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sysctl(key: &str) -> String {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn iptables_has_chain(chain: &str) -> bool {
    std::process::Command::new("iptables")
        .args(["-w", "-S", chain])
        .output()
        .expect("running iptables")
        .status
        .success()
}

async fn node_ready(client: &Client) -> bool {
    let node = Api::<Node>::all(client.clone())
        .get_opt(cluster::NODE)
        .await
        .unwrap();
    node.and_then(|n| n.status?.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Creates a busybox pod that prints `line` and exits, waits for Succeeded.
async fn run_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    host_network: bool,
    line: &str,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "hostNetwork": host_network,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": cluster::busybox_image(),
                "command": ["sh", "-c", format!("echo {line}")],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pod = pods.get(name).await.unwrap();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        match phase.as_str() {
            "Succeeded" => return pod,
            "Failed" => panic!("pod {namespace}/{name} failed: {:?}", pod.status),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "pod {namespace}/{name} not Succeeded after 90 s: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_runs_pods_on_both_networks_and_down_leaves_the_host_clean() {
    common::testbed(); // the source registry holds the node's images
    let started = Instant::now();
    let cluster = cluster::up();
    eprintln!("up: {:.1} s", started.elapsed().as_secs_f64());
    let client = cluster.client().await;
    assert!(
        node_ready(&client).await,
        "up returned before the node was Ready"
    );

    let ns = format!("cluster-testbed-{}", common::unique() % 1_000_000);
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    cluster::wait_for_default_service_account(&client, &ns).await;

    let host_line = format!("hello from the host network {}", common::unique());
    let bridge_line = format!("hello from the pod bridge {}", common::unique());
    let (host, bridge) = tokio::join!(
        run_pod(&client, &ns, "on-host", true, &host_line),
        run_pod(&client, &ns, "on-bridge", false, &bridge_line),
    );
    eprintln!(
        "both pods Succeeded: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let bridge_ip = bridge.status.as_ref().and_then(|s| s.pod_ip.clone());
    assert!(
        bridge_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("198.18.0.")),
        "the bridge pod's IP is {bridge_ip:?}, not in 198.18.0.0/24"
    );
    let host_ip = host.status.as_ref().and_then(|s| s.pod_ip.clone());
    assert_ne!(
        host_ip, bridge_ip,
        "the hostNetwork pod shares the bridge pod's IP"
    );
    for (pod, line) in [(&host, &host_line), (&bridge, &bridge_line)] {
        let uid = pod.uid().unwrap();
        let log = cluster.container_log(&ns, &uid, "main");
        assert_eq!(
            log.as_deref(),
            Some(format!("{line}\n").as_str()),
            "pod-log file of {} under {}",
            pod.name_any(),
            cluster.pod_logs().display()
        );
    }

    // While the node runs, the kubelet's kernel tunables are in force: the
    // restore below is then a real change back.
    let recorded = recorded_sysctls(&cluster);
    assert!(
        recorded.contains_key("vm.overcommit_memory") && recorded.contains_key("kernel.panic"),
        "sysctls recorded before the first start: {recorded:?}"
    );
    assert_eq!(
        sysctl("vm.overcommit_memory"),
        "1",
        "the kubelet sets vm.overcommit_memory=1"
    );
    assert!(
        Path::new("/sys/class/net/privnode0").exists(),
        "the pod bridge privnode0 exists while a bridge pod ran"
    );
    assert!(
        !cluster::mounts_under(&cluster.state).is_empty(),
        "the kubelet/containerd mounts under the state dir while up"
    );

    // The node changes no firewall rule (no kube-proxy; the kubelet makes
    // no iptables chains), so down has none to revert.
    assert!(
        !iptables_has_chain("KUBE-FIREWALL"),
        "the running node made a KUBE-FIREWALL chain"
    );
    let stopping = Instant::now();
    cluster::down(false);
    eprintln!("down: {:.1} s", stopping.elapsed().as_secs_f64());
    assert_eq!(
        cluster::mounts_under(&cluster.state),
        Vec::<String>::new(),
        "mounts left under the state dir after down"
    );
    assert!(
        !Path::new("/sys/class/net/privnode0").exists(),
        "the bridge is left after down"
    );
    for (key, value) in &recorded {
        assert_eq!(&sysctl(key), value, "sysctl {key} after down");
    }
    let pre_existing = std::fs::read_to_string(cluster.state.join("host/paths")).unwrap();
    for path in [
        "/var/lib/kubelet",
        "/var/log/pods",
        "/var/lib/cni",
        "/run/containerd",
    ] {
        if !pre_existing.lines().any(|l| l == path) {
            assert!(!Path::new(path).exists(), "{path} is left after down");
        }
    }
    for name in [
        "kubelet",
        "containerd",
        "kube-scheduler",
        "kube-controller-manager",
    ] {
        let pid_file = cluster.state.join(format!("run/{name}.pid"));
        assert!(
            !pid_file.exists(),
            "{} is left after down",
            pid_file.display()
        );
    }

    // Up again (later tests use the running cluster); the node comes back Ready.
    let restarting = Instant::now();
    let cluster = cluster::up();
    eprintln!("up again: {:.1} s", restarting.elapsed().as_secs_f64());
    let client = cluster.client().await;
    assert!(
        node_ready(&client).await,
        "the node is not Ready after the second up"
    );
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
