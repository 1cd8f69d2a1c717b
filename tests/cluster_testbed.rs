//! The cluster testbed itself (`testbed/cluster/{up,down}`): the node gets
//! Ready, pods of the testbed's busybox image run on the host network and on
//! the pod bridge, their output lands in the kubelet's pod-log files, and
//! `down` leaves the host as it found it (no mounts, no bridge, no iptables
//! chains, the sysctls the kubelet set restored). The cluster is brought up
//! again at the end, so later tests find it running. A pod on the bridge with
//! an HTTP readiness probe gets Ready (the kubelet reaches it on the bridge),
//! and no pod or Service address routes through any interface but the bridge;
//! Services answer through kube-proxy (the host reaches a pod by ClusterIP, a
//! pod the apiserver by the `kubernetes` Service), pods reach the registries
//! and moto at the bridge address, and the fence drops nothing meanwhile.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use common::cluster::{self, Cluster};

/// One test of this file at a time: the first stops and restarts the cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pod bridge, the pod subnet and the Service CIDR (testbed/cluster/lib.sh).
const BRIDGE: &str = "privnode0";
const POD_PREFIX: &str = "198.18.0.";
const SERVICE_PREFIX: &str = "198.19.0.";
const NFT_TABLE: &str = "privatize_node";

fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip -j {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip -j {}: {e}", args.join(" ")))
}

/// The interface `ip route get ADDR` sends ADDR through (None: no route).
fn route_dev(addr: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "get", addr])
        .output()
        .expect("running ip");
    if !out.status.success() {
        return None;
    }
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    routes[0]["dev"].as_str().map(str::to_string)
}

/// The interface of the host's default route, if it has one.
fn default_route_dev() -> Option<String> {
    ip_json(&["route", "show", "default"])
        .as_array()
        .and_then(|r| r.first().cloned())
        .and_then(|r| r["dev"].as_str().map(str::to_string))
}

fn nft_has_table(name: &str) -> bool {
    nft_has("inet", name)
}

fn nft_has(family: &str, name: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", family, name])
        .output()
        .expect("running nft")
        .status
        .success()
}

/// Packets the fence table dropped so far (every drop rule has a counter):
/// a packet to a pod or Service address that would have left through
/// another interface, or forwarded between the bridge and one.
fn fence_drops() -> u64 {
    let out = std::process::Command::new("nft")
        .args(["-j", "list", "table", "inet", NFT_TABLE])
        .output()
        .expect("running nft");
    assert!(out.status.success(), "nft -j list table inet {NFT_TABLE}");
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rules: Vec<&serde_json::Value> = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item.get("rule"))
        .collect();
    let counted: Vec<u64> = rules
        .iter()
        .filter_map(|rule| {
            let exprs = rule["expr"].as_array()?;
            let drops = exprs.iter().any(|e| e.get("drop").is_some());
            let counter = exprs.iter().find_map(|e| e["counter"]["packets"].as_u64());
            drops.then(|| counter.expect("every drop rule of the fence has a counter"))
        })
        .collect();
    assert_eq!(counted.len(), 4, "the fence's drop rules: {rules:?}");
    counted.iter().sum()
}

/// Runs a busybox pod on the bridge with `script`, waits for it to end, and
/// returns its phase and output.
async fn bridge_pod_output(
    client: &Client,
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    script: &str,
) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": cluster::busybox_image(),
                "command": ["sh", "-c", script],
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pod = ended(&pods, name).await;
    let log = cluster
        .container_log(namespace, &pod.uid().unwrap(), "main")
        .unwrap_or_default();
    (phase(&pod), log)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let ns = format!("{prefix}-{}", common::unique() % 1_000_000);
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    cluster::wait_for_default_service_account(client, &ns).await;
    ns
}

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
    let pod = ended(&pods, name).await;
    assert_eq!(
        phase(&pod),
        "Succeeded",
        "pod {namespace}/{name}: {:?}",
        pod.status
    );
    pod
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

/// Polls a pod until it Succeeded or Failed (90 s at most).
async fn ended(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pod = pods.get(name).await.unwrap();
        if matches!(phase(&pod).as_str(), "Succeeded" | "Failed") {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} did not end in 90 s: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_runs_pods_on_both_networks_and_down_leaves_the_host_clean() {
    let _serial = SERIAL.lock().await;
    common::testbed(); // the source registry holds the node's images
    let started = Instant::now();
    let cluster = cluster::up();
    eprintln!("up: {:.1} s", started.elapsed().as_secs_f64());
    let client = cluster.client().await;
    assert!(
        node_ready(&client).await,
        "up returned before the node was Ready"
    );

    let ns = create_namespace(&client, "cluster-testbed").await;

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

    // The kubelet makes no iptables chains; kube-proxy's rules are its own
    // nft tables, which down deletes.
    assert!(
        !iptables_has_chain("KUBE-FIREWALL"),
        "the running node made a KUBE-FIREWALL chain"
    );
    assert!(
        nft_has("ip", "kube-proxy"),
        "kube-proxy's table ip kube-proxy is missing while the node runs"
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
    assert!(
        !nft_has_table(NFT_TABLE),
        "nft table inet {NFT_TABLE} is left after down"
    );
    for family in ["ip", "ip6"] {
        assert!(
            !nft_has(family, "kube-proxy"),
            "nft table {family} kube-proxy is left after down"
        );
    }
    assert_ne!(
        route_dev(&format!("{SERVICE_PREFIX}1")).as_deref(),
        Some(BRIDGE),
        "the Service CIDR's route is left after down"
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
        "kube-proxy",
        "forward-15000",
        "forward-15443",
        "forward-15500",
        "forward-18443",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probed_bridge_pod_gets_ready_and_no_pod_or_service_address_routes_off_the_machine() {
    let _serial = SERIAL.lock().await;
    common::testbed();
    let cluster = cluster::up();
    let client = cluster.client().await;
    let ns = create_namespace(&client, "cluster-network").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Only the kubelet on the host dials the pod here (its readiness probe):
    // Ready means the pod IP routed to the bridge and the probe got there.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probed", "labels": {"app": "probed"}},
        "spec": {
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web",
                "image": cluster::busybox_image(),
                "command": ["sh", "-c",
                    "mkdir -p /www && echo ready >/www/index.html && exec httpd -f -p 8080 -h /www"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {
                    "httpGet": {"path": "/index.html", "port": 8080},
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                },
            }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let pod = loop {
        let pod = pods.get("probed").await.unwrap();
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "pod {ns}/probed not Ready after 90 s (the kubelet's probe did not reach it): {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pod_ip = pod.status.and_then(|s| s.pod_ip).unwrap();
    assert!(
        pod_ip.starts_with(POD_PREFIX),
        "the probed pod's IP {pod_ip} is not in the pod subnet"
    );

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "probed"},
        "spec": {"selector": {"app": "probed"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))
    .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap();
    assert!(
        cluster_ip.starts_with(SERVICE_PREFIX),
        "the Service got ClusterIP {cluster_ip}, outside the testbed's Service CIDR"
    );

    let outward = default_route_dev();
    assert_ne!(outward.as_deref(), Some(BRIDGE));
    for addr in [
        pod_ip.clone(),
        format!("{POD_PREFIX}13"),
        format!("{POD_PREFIX}254"),
        cluster_ip.clone(),
        format!("{SERVICE_PREFIX}1"), // the `kubernetes` Service
        format!("{SERVICE_PREFIX}254"),
    ] {
        let dev = route_dev(&addr);
        assert_eq!(
            dev.as_deref(),
            Some(BRIDGE),
            "{addr} routes through {dev:?} (the default route's interface is {outward:?})"
        );
    }
    assert!(
        nft_has_table(NFT_TABLE),
        "the fence table inet {NFT_TABLE} is missing while the node runs"
    );

    // Services have a data path (kube-proxy): the host reaches the pod
    // through its ClusterIP, as the apiserver reaches a webhook.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // kube-proxy programs a new Service within a sync period: retry a while.
    let url = format!("http://{cluster_ip}/index.html");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        match http.get(&url).send().await {
            Ok(answer) => break answer.text().await.unwrap(),
            Err(e) if Instant::now() > deadline => panic!("GET {url} (the Service), for 30 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert_eq!(body, "ready\n", "the pod's page through its Service");

    // A pod reaches the apiserver through the `kubernetes` Service, and the
    // registries and moto under the bridge address the node pulls by.
    let (phase, log) = bridge_pod_output(
        &client,
        &cluster,
        &ns,
        "client",
        "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT -e /bin/true && echo apiserver-ok; \
         echo registry $(wget -q -O- http://198.18.0.1:15000/v2/); \
         wget -q -O /dev/null http://198.18.0.1:15500/moto-api/ && echo moto-ok",
    )
    .await;
    assert_eq!(phase, "Succeeded", "{log}");
    assert_eq!(
        log, "apiserver-ok\nregistry {}\nmoto-ok\n",
        "what the pod reached"
    );
    assert_eq!(
        fence_drops(),
        0,
        "the fence dropped packets: something tried to leave the machine"
    );

    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .unwrap();
}
