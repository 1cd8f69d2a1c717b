//! privatize as users run it: `privatize install` into the cluster testbed,
//! serve as a Deployment of two replicas behind its Service, the webhooks
//! registered by Service reference. Pods reach the apiserver through the
//! `kubernetes` Service (kube-proxy) and the registries and moto at the
//! bridge address, the name the node pulls by; the apiserver calls serve
//! through the Service. A Deployment's pods are gated, one copy Job (its own
//! AWS keys, no API token) mirrors the image, and the pods run from the copy
//! with the injected pull Secret; the refresh CronJob, run now, exits 0.

mod common;
#[path = "node/harness.rs"]
#[allow(dead_code)] // the node stories' System is not used here
mod harness;
#[path = "in_cluster/upgrades.rs"]
mod upgrades;

use std::process::Command;
use std::time::Instant;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use common::{helm, stderr, testbed, unique};
use harness::{gated, image_of, node, one_at_a_time, running_digest, source_digest, wait_for};

/// The bridge address (testbed/cluster/lib.sh): the registries, moto and
/// the apiserver as pods and the node reach them.
const BRIDGE: &str = "198.18.0.1";

/// serve's pods (the Deployment's selector).
const SERVE_PODS: &str = "app.kubernetes.io/name=privatize,app.kubernetes.io/component=webhook";

/// The copy Jobs' own AWS keys (push), from a Secret of their own.
const COPY_JOB_POD_TEMPLATE: &str = "\
containers:
- name: sync-image
  envFrom:
  - secretRef: {name: aws-push-keys}
";

/// One installation and its application namespace, removed on drop.
struct Installed {
    client: Client,
    namespace: String,
    apps: String,
    dir: std::path::PathBuf,
    /// Installed with helm (uninstalled with helm).
    helm: bool,
}

impl Installed {
    /// `privatize` as a user runs it: ECR_REGISTRY exported, no AWS_REGION,
    /// the cluster's kubeconfig.
    fn privatize(&self, registry: &str) -> Command {
        let mut cmd = testbed().privatize();
        cmd.env("KUBECONFIG", &node().cluster.kubeconfig)
            .env("ECR_REGISTRY", registry)
            .env_remove("AWS_REGION")
            .env_remove("AWS_DEFAULT_REGION");
        cmd
    }

    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(node().cluster.state.join("bin/kubectl"));
        cmd.env("KUBECONFIG", &node().cluster.kubeconfig);
        cmd
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.helm {
            let _ = helm_uninstall(&self.namespace).output();
        }
        let _ = self
            .privatize("")
            .args(["uninstall", "--namespace", &self.namespace])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let client = self.client.clone();
        let names = [
            self.apps.clone(),
            format!("{}-unbound", self.apps),
            self.namespace.clone(),
        ];
        common::kube::block_on_thread(|| async move {
            for name in names {
                let _ = Api::<Namespace>::all(client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await;
            }
        });
    }
}

async fn create_namespace(client: &Client, value: Value) {
    let object: Namespace = serde_json::from_value(value).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating Namespace {}: {e}", object.name_any()));
}

async fn create_secret(client: &Client, namespace: &str, value: Value) {
    let object: Secret = serde_json::from_value(value).unwrap();
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating Secret {}: {e}", object.name_any()));
}

/// What the pods of a Job printed (the kubelet's pod-log files), for messages.
async fn job_logs(client: &Client, namespace: &str, job: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap()
        .items;
    pods.iter()
        .map(|pod| {
            let container = &pod.spec.as_ref().unwrap().containers[0].name;
            let log = node()
                .cluster
                .container_log(namespace, &pod.uid().unwrap(), container);
            format!("--- {}:\n{}", pod.name_any(), log.unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `helm uninstall` of the release in `namespace`, waiting up to 120 s.
fn helm_uninstall(namespace: &str) -> Command {
    let mut cmd = Command::new(helm());
    cmd.env("KUBECONFIG", &node().cluster.kubeconfig).args([
        "uninstall",
        "privatize",
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "120s",
    ]);
    cmd
}

/// The port of a testbed address (`127.0.0.1:15000`, `http://127.0.0.1:15500`).
fn port(address: &str) -> &str {
    address.rsplit(':').next().unwrap()
}

fn keys(name: &str, id: &str) -> Value {
    json!({"metadata": {"name": name},
           "stringData": {"AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": "testing"}})
}

/// The testbed addresses a story needs, by the names pods use.
struct Names {
    registry: String,
    image: String,
    source: String,
    moto: String,
    target_ca: String,
}

/// Namespaces, the two identities' Secrets and the copy-Job pod template.
async fn setup(kind: &str) -> (Installed, Names) {
    let node = node();
    let tb = testbed();
    let client = node.cluster.client().await;
    let id = unique() % 1_000_000_007;
    let installed = Installed {
        client: client.clone(),
        namespace: format!("privatize-{kind}{id}"),
        apps: format!("apps-{kind}{id}"),
        dir: std::env::temp_dir().join(format!("privatize-in-cluster-{id}")),
        helm: kind == "h",
    };
    let (ns, apps) = (installed.namespace.as_str(), installed.apps.as_str());
    std::fs::create_dir_all(&installed.dir).unwrap();
    let names = Names {
        registry: format!("{BRIDGE}:{}/incluster-{kind}{id}", port(tb.target())),
        // privatize's own image, by the name pods pull it by.
        image: format!("{BRIDGE}:{}/privatize/privatize", port(tb.source())),
        source: format!("{BRIDGE}:{}", port(tb.source())),
        moto: format!("http://{BRIDGE}:{}", port(&tb.env["MOTO_ENDPOINT"])),
        target_ca: tb.env["TARGET_CA_FILE"].clone(),
    };

    // serve's keys and the copy Jobs' keys: two identities, two Secrets.
    create_namespace(&client, json!({"metadata": {"name": ns}})).await;
    create_secret(&client, ns, keys("aws-pull-keys", "PULLKEY")).await;
    create_secret(&client, ns, keys("aws-push-keys", "PUSHKEY")).await;
    create_namespace(
        &client,
        json!({"metadata": {"name": apps, "labels": {"privatize.io/ecr-credentials": "enabled"}}}),
    )
    .await;
    // Enabled by its owner, but nobody bound privatize-credentials there.
    create_namespace(
        &client,
        json!({"metadata": {"name": format!("{apps}-unbound"),
                            "labels": {"privatize.io/ecr-credentials": "enabled"}}}),
    )
    .await;
    std::fs::write(
        installed.dir.join("copy-job-pod.yaml"),
        COPY_JOB_POD_TEMPLATE,
    )
    .unwrap();
    (installed, names)
}

/// `privatize install` as the README has it for a cluster outside AWS: two
/// replicas, serve's keys from a Secret, the copy Jobs' own through the pod
/// template, and the testbed's endpoints by the names pods use.
fn install(installed: &Installed, names: &Names) -> std::process::Output {
    install_command(installed, names).output().unwrap()
}

fn install_command(installed: &Installed, names: &Names) -> Command {
    let (ns, apps) = (installed.namespace.as_str(), installed.apps.as_str());
    let image = format!("{}@{}", names.image, node().image_digest);
    let mut cmd = installed.privatize(&names.registry);
    cmd.args(["install", "--namespace", ns, "--image", &image])
        .args(["--ca-file", &names.target_ca])
        .args(["--aws-credentials-secret", "aws-pull-keys"])
        .args(["--credential-namespaces", apps])
        .arg("--copy-job-pod-template")
        .arg(installed.dir.join("copy-job-pod.yaml"))
        .args(["--env", "PRIVATIZE_TARGET_KIND=ecr"])
        .args(["--env", "AWS_REGION=us-east-1"])
        .args(["--env", &format!("AWS_ENDPOINT_URL={}", names.moto)])
        .args(["--env", &format!("PRIVATIZE_PLAIN_HTTP={}", names.source)])
        .args(["--env", "PRIVATIZE_EXCLUDE=example.invalid"])
        .args(["--env", &format!("PRIVATIZE_CREDENTIAL_NAMESPACES={apps}")])
        .args(["--wait-timeout", "180"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_runs_serve_in_the_cluster_and_pods_start_from_the_copy() {
    let _one = one_at_a_time().await;
    let (installed, names) = setup("c").await;

    // install, as the README's "Install into a cluster" has it (2 replicas).
    let started = Instant::now();
    let out = install(&installed, &names);
    assert!(out.status.success(), "install: {}", stderr(&out));
    eprintln!(
        "install -> serve Ready: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    story(&installed, &names).await;
    let t = Instant::now();
    let mut uninstall = installed.privatize(&names.registry);
    uninstall.args(["uninstall", "--namespace", &installed.namespace]);
    uninstall_with_a_pod_in_flight(&installed, &names, uninstall).await;
    eprintln!(
        "uninstall with a pod in flight: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// `uninstall` (privatize's or helm's) while a pod waits at the gate for a
/// large copy: the pod is released (or reverted) before serve goes, and
/// nothing privatize made is left, cluster-wide or in the application
/// namespace.
async fn uninstall_with_a_pod_in_flight(
    installed: &Installed,
    names: &Names,
    mut uninstall: Command,
) {
    let tb = testbed();
    let client = installed.client.clone();
    let (ns, apps) = (installed.namespace.as_str(), installed.apps.as_str());
    let (large, _) = tb.image("large");
    let large = large.replacen(tb.source(), &names.source, 1);
    let pods: Api<Pod> = Api::namespaced(client.clone(), apps);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "in-flight"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": large, "command": ["sleep", "3600"]}]},
    }))
    .unwrap();
    let admitted = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert!(
        gated(&admitted),
        "the large image's pod waits at the gate: {:?}",
        admitted.spec
    );

    let out = tokio::task::spawn_blocking(move || uninstall.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "uninstall: {}", stderr(&out));
    let after = pods.get("in-flight").await.unwrap();
    assert!(
        !gated(&after),
        "uninstall left the pod gated: {:?}",
        after.spec
    );
    assert!(
        image_of(&after) == large || image_of(&after).starts_with(&format!("{}/", names.registry)),
        "the pod's image after uninstall: {}",
        image_of(&after)
    );

    nothing_left(installed);
    if installed.helm {
        // helm leaves the release namespace; the release's objects are gone.
        let out = installed
            .kubectl()
            .args(["get", "deployments,services,cronjobs,poddisruptionbudgets,serviceaccounts,roles,rolebindings,configmaps,secrets"])
            .args(["-n", ns, "-o", "name", "-l", "app.kubernetes.io/part-of=privatize"])
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl get: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "the release's objects left in {ns}"
        );
        return;
    }
    let namespace = Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await
        .unwrap();
    assert!(
        namespace.is_none()
            || namespace
                .as_ref()
                .and_then(|n| n.metadata.deletion_timestamp.as_ref())
                .is_some(),
        "the install namespace {ns} is still there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_runs_serve_in_the_cluster_and_pods_start_from_the_copy() {
    let _one = one_at_a_time().await;
    let (installed, names) = setup("h").await;
    let values = helm_values(&installed, &names);
    let registered = tokio::spawn(ready_when_registered(
        installed.client.clone(),
        installed.namespace.clone(),
    ));
    let started = Instant::now();
    let mut helm_install = helm_command(&installed, &names, "install", &values);
    let out = tokio::task::spawn_blocking(move || helm_install.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "helm install: {}", stderr(&out));
    eprintln!(
        "helm install -> serve Ready: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Like install, the chart registers the webhooks once serve is ready.
    assert_eq!(
        registered.await.unwrap(),
        Some(2),
        "serve replicas Ready when the webhooks were registered"
    );
    story(&installed, &names).await;

    // helm uninstall with a pod at the gate: the pre-delete hook removes the
    // webhooks and releases it; the release's objects go; nothing privatize
    // made is left.
    let uninstall = helm_uninstall(&installed.namespace);
    uninstall_with_a_pod_in_flight(&installed, &names, uninstall).await;
}

/// Waits (polling every 100 ms, up to 240 s) for the webhook configuration
/// registering serve in `namespace`, then returns how many serve replicas
/// were Ready at that moment.
async fn ready_when_registered(client: Client, namespace: String) -> Option<i32> {
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client, &namespace);
    let deadline = Instant::now() + std::time::Duration::from_secs(240);
    while Instant::now() < deadline {
        let ours = configs
            .get_opt("privatize")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| {
                c.webhooks.unwrap_or_default().iter().any(|w| {
                    w.client_config
                        .service
                        .as_ref()
                        .map(|s| s.namespace.as_str())
                        == Some(namespace.as_str())
                })
            });
        if ours {
            let deployment = deployments.get_opt("privatize").await.ok().flatten();
            return Some(
                deployment
                    .and_then(|d| d.status?.ready_replicas)
                    .unwrap_or(0),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// The chart's values for what `install` is given in `install_command`.
fn helm_values(installed: &Installed, names: &Names) -> Value {
    let apps = installed.apps.as_str();
    json!({
        "image": {"repository": names.image, "digest": node().image_digest},
        "targetRegistry": names.registry,
        "copyJobPodTemplate": serde_yaml_ng::from_str::<Value>(COPY_JOB_POD_TEMPLATE).unwrap(),
        "ecrCredentials": {"namespaces": [apps]},
        "exclude": ["example.invalid"],
        "aws": {
            "region": "us-east-1",
            "existingSecret": "aws-pull-keys",
            "env": [{"name": "AWS_ENDPOINT_URL", "value": names.moto}],
        },
        "extraEnv": [
            {"name": "PRIVATIZE_TARGET_KIND", "value": "ecr"},
            {"name": "PRIVATIZE_PLAIN_HTTP", "value": names.source},
            {"name": "PRIVATIZE_CREDENTIAL_NAMESPACES", "value": apps},
        ],
    })
}

/// `helm install|upgrade privatize charts/privatize --wait` with `values`.
fn helm_command(installed: &Installed, names: &Names, verb: &str, values: &Value) -> Command {
    let values_file = installed.dir.join(format!("values-{}.json", unique()));
    std::fs::write(&values_file, values.to_string()).unwrap();
    let mut cmd = Command::new(helm());
    cmd.env("KUBECONFIG", &node().cluster.kubeconfig)
        .args([
            verb,
            "privatize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/privatize"),
        ])
        .args([
            "--namespace",
            &installed.namespace,
            "--wait",
            "--timeout",
            "180s",
        ])
        .arg("--values")
        .arg(&values_file)
        .arg("--set-file")
        .arg(format!("registryCaBundle={}", names.target_ca));
    cmd
}

/// serve is Ready in the cluster; the rest of the story is the same however
/// it was installed.
async fn story(installed: &Installed, names: &Names) {
    let tb = testbed();
    let client = installed.client.clone();
    let (ns, apps) = (installed.namespace.as_str(), installed.apps.as_str());
    let registry = &names.registry;
    let source = &names.source;
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get("privatize")
        .await
        .unwrap();
    assert_eq!(
        deployment.status.as_ref().and_then(|s| s.ready_replicas),
        Some(2),
        "both serve replicas are Ready"
    );

    // The refresh CronJob, run now: creates the apps namespace's pull Secret
    // (serve's writer puts the login in) and exits 0.
    refresh_now(installed).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    // Its rights are per namespace: the unbound one is skipped, not failed.
    let log = job_logs(&client, ns, "refresh-now").await;
    assert!(
        log.contains("skipped (no RoleBinding of privatize-credentials): ")
            && log.contains(&format!("{apps}-unbound")),
        "the summary names the unbound namespace: {log}"
    );
    let pull_secret = Api::<Secret>::namespaced(client.clone(), apps)
        .get("privatize-ecr")
        .await
        .expect("refresh-secrets --ensure created the pull Secret");
    let config: Value =
        serde_json::from_slice(&pull_secret.data.unwrap()[".dockerconfigjson"].0).unwrap();
    assert!(
        config["auths"][format!("{BRIDGE}:{}", port(tb.target()))]["auth"].is_string(),
        "serve wrote a login for the mirror: {config}"
    );

    // A Deployment of the public image: gated, copied by one Job, released.
    let app_image = format!("{source}/testbed/busybox:1.36");
    let app: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": app_image,
                                    "command": ["sh", "-c", "exec sleep 3600"]}],
                },
            },
        },
    }))
    .unwrap();
    let created = Instant::now();
    Api::<Deployment>::namespaced(client.clone(), apps)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), apps);
    let labelled = ListParams::default().labels("app=web");
    let first = wait_for("the app's pods", 30, || async {
        let items = pods.list(&labelled).await.unwrap().items;
        (items.len() == 2).then_some(items)
    })
    .await;
    for pod in &first {
        assert!(
            gated(pod) || image_of(pod).starts_with(registry.as_str()),
            "pod {} was neither gated nor rewritten: {}",
            pod.name_any(),
            image_of(pod)
        );
    }
    let copies = wait_for("one copy Job", 30, || async {
        let params = ListParams::default()
            .labels("app.kubernetes.io/managed-by=privatize,privatize.io/source-hash");
        let items = jobs.list(&params).await.unwrap().items;
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(copies.len(), 1, "one copy Job for one image");
    let job_name = copies[0].name_any();

    let running = wait_for("both pods Running from the copy", 180, || async {
        let items = pods.list(&labelled).await.unwrap().items;
        let all = items.len() == 2
            && items
                .iter()
                .all(|p| !gated(p) && running_digest(p).is_some());
        all.then_some(items)
    })
    .await;
    eprintln!(
        "pod CREATE -> Running through in-cluster serve (copy included): {:.1} s",
        created.elapsed().as_secs_f64()
    );
    let want = source_digest(&format!("{}/testbed/busybox:1.36", tb.source()));
    for pod in &running {
        assert!(
            image_of(pod).starts_with(&format!("{registry}/")),
            "pod {} runs {}, not the copy under {registry}",
            pod.name_any(),
            image_of(pod)
        );
        assert_eq!(running_digest(pod).as_deref(), Some(want.as_str()));
        let pull_secrets: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(pull_secrets, ["privatize-ecr"], "the injected pull Secret");
    }

    // The copy Job's pod, as the kubelet ran it: its own account and keys,
    // no API token, none of serve's identity.
    let job_pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
        .unwrap()
        .items;
    let job_pod = job_pods
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
        .unwrap_or_else(|| panic!("no Succeeded pod of Job {job_name}: {job_pods:?}"));
    let spec = serde_json::to_value(job_pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["serviceAccountName"], "privatize");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_ne!(spec["hostNetwork"], true, "the copy ran on the pod network");
    let container = &spec["containers"][0];
    assert_eq!(
        container["envFrom"],
        json!([{"secretRef": {"name": "aws-push-keys"}}]),
        "the copy Job's own keys"
    );
    let text = container.to_string();
    assert!(
        !text.contains("aws-pull-keys"),
        "serve's keys reached the copy Job: {text}"
    );
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        assert!(
            !container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name),
            "{name} passed on to the copy Job: {text}"
        );
    }

    // The webhooks are registered by Service, not URL.
    let out = installed
        .kubectl()
        .args([
            "get",
            "mutatingwebhookconfiguration",
            "privatize",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let webhooks: Value = serde_json::from_slice(&out.stdout).unwrap();
    for webhook in webhooks["webhooks"].as_array().unwrap() {
        assert_eq!(
            webhook["clientConfig"]["service"]["namespace"], ns,
            "{webhook}"
        );
        assert!(webhook["clientConfig"]["url"].is_null());
    }
}

/// Faults while serve runs in the cluster: a copy pod killed mid-copy (the
/// Job retries, the digest is exact), a serve pod killed while a pod waits at
/// the gate (the other replica releases it), the apiserver restarted (serve
/// reconnects: the next pod is gated and released again) and the node's
/// containerd restarted (serve keeps running). Nothing is left gated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_in_the_cluster_lose_nothing() {
    let _one = one_at_a_time().await;
    let tb = testbed();
    let (installed, names) = setup("f").await;
    let out = install(&installed, &names);
    assert!(out.status.success(), "install: {}", stderr(&out));
    let client = installed.client.clone();
    let (ns, apps) = (installed.namespace.as_str(), installed.apps.as_str());
    let pods: Api<Pod> = Api::namespaced(client.clone(), apps);
    let serve_pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };

    // 1. A pod of the large image waits at the gate; its copy pod and one
    //    serve replica are killed.
    let (large, _) = tb.image("large");
    let want = source_digest(&large);
    let large = large.replacen(tb.source(), &names.source, 1);
    // The apiserver takes a moment to see the webhooks install registered
    // last (the pod webhook fails open meanwhile): wait until it calls them.
    wait_for("the pod webhook called", 30, || async {
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pod = pods.create(&dry, &sleeper("probe", &large)).await.ok()?;
        gated(&pod).then_some(())
    })
    .await;
    // The pull Secret appears only now, after the probe: serve forgets a
    // missing one within a second, so the next pod gets it.
    refresh_now(&installed).await;
    let admitted = pods
        .create(&PostParams::default(), &sleeper("big", &large))
        .await
        .unwrap();
    assert!(gated(&admitted), "the large image's pod waits at the gate");
    let copy = wait_for("the copy Job's pod Running", 60, || async {
        let items = serve_pods
            .list(&ListParams::default().labels("privatize.io/source-hash"))
            .await
            .unwrap()
            .items;
        // Its container running now, not just the pod's phase.
        items.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| {
                    s.container_statuses
                        .as_ref()?
                        .first()?
                        .state
                        .as_ref()?
                        .running
                        .as_ref()
                })
                .is_some()
        })
    })
    .await;
    serve_pods.delete(&copy.name_any(), &now).await.unwrap();
    let serving = serve_pods
        .list(&ListParams::default().labels(SERVE_PODS))
        .await
        .unwrap()
        .items;
    assert_eq!(serving.len(), 2, "two serve replicas");
    serve_pods
        .delete(&serving[0].name_any(), &now)
        .await
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(240);
    let released = loop {
        let pod = pods.get("big").await.unwrap();
        // The large test image has random layers and no command to run:
        // pulled (its imageID known) is as far as it gets.
        if !gated(&pod) && pulled_digest(&pod).is_some() {
            break pod;
        }
        if Instant::now() > deadline {
            let jobs = jobs.list(&ListParams::default()).await.unwrap().items;
            let serve_logs = serve_pods
                .list(&ListParams::default().labels(SERVE_PODS))
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| node().log(p, "privatize"))
                .collect::<Vec<_>>()
                .join("\n---\n");
            panic!(
                "the big pod is not Running from the copy after 240 s: {:?} {:?}\njobs: {:?}\nserve: {serve_logs}",
                pod.spec.as_ref().map(|s| (&s.scheduling_gates, &s.containers[0].image)),
                pod.status,
                jobs.iter().map(|j| (j.name_any(), &j.status)).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert!(
        image_of(&released).starts_with(&format!("{}/", names.registry)),
        "the pod runs {}, not the copy",
        image_of(&released)
    );
    assert_eq!(
        pulled_digest(&released).as_deref(),
        Some(want.as_str()),
        "exact digest"
    );
    let job_name = copy.labels()["job-name"].clone();
    // The Job controller records the retry's success a moment after the
    // copy landed (serve may release on presence first): wait for it.
    let _ = wait_for("the copy Job's success recorded", 60, || async {
        let job = jobs.get(&job_name).await.unwrap();
        (job.status?.succeeded == Some(1)).then_some(())
    })
    .await;
    let job = jobs.get(&job_name).await.unwrap();
    let status = job.status.unwrap_or_default();
    assert_eq!(
        status.succeeded,
        Some(1),
        "the copy Job retried and succeeded: {status:?}"
    );
    assert!(
        status.failed >= Some(1),
        "the killed copy pod counts as a failure (the success is the retry's): {status:?}"
    );

    // 2. The apiserver restarted: serve reconnects and gates and releases again.
    let state = &node().cluster.state;
    kill_and_restart(&state.join("kube/kube-apiserver.pid"));
    wait_for("both serve replicas Ready again", 120, || async {
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get("privatize")
            .await
            .ok()?;
        (d.status?.ready_replicas == Some(2)).then_some(())
    })
    .await;
    let busybox = format!("{}/testbed/busybox:1.36", names.source);
    rewritten_and_running(&pods, "after-apiserver", &busybox, &names.registry).await;

    // 3. The node's containerd restarted: serve keeps serving.
    kill_and_restart(&state.join("run/containerd.pid"));
    rewritten_and_running(&pods, "after-containerd", &busybox, &names.registry).await;

    let left = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(left.iter().all(|p| !gated(p)), "a pod left gated");
}

/// SIGKILLs the cluster component of a PID file, then `up` starts it again.
fn kill_and_restart(pid_file: &std::path::Path) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    common::cluster::up();
}

/// The digest the kubelet pulled for the pod's container (running or not).
fn pulled_digest(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let (_, digest) = status.image_id.rsplit_once('@')?;
    Some(digest.to_string())
}

fn sleeper(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]},
    }))
    .unwrap()
}

/// A new pod of `image` is rewritten to the mirror and runs.
async fn rewritten_and_running(pods: &Api<Pod>, name: &str, image: &str, registry: &str) {
    let admitted = wait_for(&format!("pod {name} admitted"), 60, || async {
        pods.create(&PostParams::default(), &sleeper(name, image))
            .await
            .ok()
    })
    .await;
    assert!(
        image_of(&admitted).starts_with(&format!("{registry}/")),
        "pod {name} was not rewritten: {}",
        image_of(&admitted)
    );
    wait_for(&format!("pod {name} Running"), 120, || async {
        let pod = pods.get(name).await.unwrap();
        (!gated(&pod) && running_digest(&pod).is_some()).then_some(())
    })
    .await;
}

/// Runs the refresh CronJob now (`kubectl create job --from=cronjob/…`) and
/// asserts it exits 0.
async fn refresh_now(installed: &Installed) {
    let client = installed.client.clone();
    let ns = installed.namespace.as_str();
    let out = installed
        .kubectl()
        .args([
            "create",
            "job",
            "--from=cronjob/privatize-refresh-secrets",
            "refresh-now",
            "-n",
            ns,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "kubectl create job: {}", stderr(&out));
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let refresh = wait_for("the refresh Job to finish", 120, || async {
        let job = jobs.get("refresh-now").await.unwrap();
        let done = job
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
        done.then_some(job)
    })
    .await;
    assert_eq!(
        refresh.status.as_ref().and_then(|s| s.succeeded),
        Some(1),
        "refresh-secrets in the cluster: {:?}\n{}",
        refresh.status,
        job_logs(&client, ns, "refresh-now").await
    );
}

/// No object privatize makes is left: cluster-wide (by label and by name)
/// or in the application namespace.
fn nothing_left(installed: &Installed) {
    let apps = installed.apps.as_str();
    let kinds = "mutatingwebhookconfigurations,validatingwebhookconfigurations,\
                 validatingadmissionpolicies,validatingadmissionpolicybindings,\
                 clusterroles,clusterrolebindings";
    let left = |args: &[&str]| {
        let out = installed.kubectl().args(args).output().unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let labelled = "app.kubernetes.io/managed-by=privatize";
    let cluster_wide = left(&["get", kinds, "-o", "name", "-l", labelled]);
    assert_eq!(
        cluster_wide, "",
        "cluster-wide objects left after uninstall"
    );
    let by_name = left(&["get", kinds, "-o", "name"]);
    assert!(
        !by_name
            .lines()
            .any(|l| l.rsplit('/').next().unwrap().starts_with("privatize")),
        "objects named privatize* left after uninstall: {by_name}"
    );
    let in_apps = left(&[
        "get",
        "rolebindings,jobs,configmaps",
        "-n",
        apps,
        "-o",
        "name",
        "-l",
        labelled,
    ]);
    assert_eq!(in_apps, "", "objects left in {apps} after uninstall");
}
