//! Harness for the real node (`testbed/cluster`): the cluster brought up once,
//! privatize's own image built and pushed once, and one "system" per story:
//! `install --webhook-url --replicas 0` into a namespace of its own, `serve`
//! outside the cluster answering at that URL, and an application namespace
//! enabled for ECR credentials. Stories run one at a time: the webhook
//! configuration is cluster-wide.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::common::cluster;
use crate::common::serve_gate::free_port;
use crate::common::{stderr, stdout, testbed, unique};

/// The running cluster testbed and privatize's image in the source registry.
pub struct Node {
    pub cluster: cluster::Cluster,
    /// privatize's own image, pushed to the source registry, pinned by its
    /// digest (a tag the node saw before would run its old image).
    pub image: String,
    pub image_digest: String,
    /// The runnable multi-platform test image in the "public" registry.
    pub app_image: String,
}

/// Brings the cluster up (idempotent, seconds when warm) and pushes
/// privatize's image, once per test binary.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let tb = testbed();
        let cluster = cluster::up();
        let image = format!("{}/privatize/privatize:node", tb.source());
        let built = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-image"))
            .args(["--push", &image])
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/build-image");
        assert!(built.status.success(), "scripts/build-image --push failed");
        let image_digest = stdout(&built)
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .expect("scripts/build-image printed no digest")
            .to_string();
        Node {
            cluster,
            image: format!("{image}@{image_digest}"),
            image_digest,
            app_image: cluster::busybox_image(),
        }
    })
}

impl Node {
    /// What a container printed, from the kubelet's pod-log file
    /// (`kubectl logs` needs the apiserver to dial the kubelet: not here).
    pub fn log(&self, pod: &Pod, container: &str) -> String {
        self.cluster
            .container_log(&pod.namespace().unwrap(), &pod.uid().unwrap(), container)
            .unwrap_or_default()
    }
}

/// Holds the stories one at a time.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// One installed privatize on the cluster: its namespace, the registry
/// prefix it mirrors to, serve running outside the cluster, and an
/// application namespace enabled for ECR credentials.
pub struct System {
    pub client: Client,
    pub namespace: String,
    pub apps: String,
    pub registry: String,
    dir: PathBuf,
    serve: Option<Child>,
    /// serve's health and metrics port.
    pub http_port: u16,
    /// More namespaces a test made (`namespace`), deleted with the system.
    extra: std::sync::Mutex<Vec<String>>,
}

impl System {
    pub async fn start(swap_policy: &str) -> Self {
        Self::start_with(swap_policy, &[]).await
    }

    /// `start` with more environment for serve.
    pub async fn start_with(swap_policy: &str, serve_env: &[(&str, &str)]) -> Self {
        let node = node();
        let tb = testbed();
        let client = node.cluster.client().await;
        let id = unique() % 1_000_000;
        let namespace = format!("privatize-n{id}");
        let apps = format!("apps-n{id}");
        let registry = format!("{}/node-{id}", tb.target());
        let dir = std::env::temp_dir().join(format!("privatize-node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let [https_port, http_port] = [free_port(), free_port()];
        let url = format!("https://127.0.0.1:{https_port}");
        let mut system = System {
            client: client.clone(),
            namespace: namespace.clone(),
            apps: apps.clone(),
            registry: registry.clone(),
            dir: dir.clone(),
            serve: None,
            http_port,
            extra: Default::default(),
        };

        // 1. install, registered by URL; serve runs outside: no replicas.
        let out = system
            .privatize()
            .args(["install", "--namespace", &namespace, "--webhook-url", &url])
            .args(["--replicas", "0", "--image", &node.image])
            .arg("--ca-file")
            .arg(&tb.env["TARGET_CA_FILE"])
            .output()
            .unwrap();
        assert!(out.status.success(), "install: {}", stderr(&out));

        // 2. The copy Jobs' AWS credentials, from a Secret reference in the
        //    pod template (a cluster outside AWS with static keys), and the
        //    host network to reach the testbed's registries and moto.
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "aws-credentials"},
            "stringData": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        }))
        .unwrap();
        Api::<Secret>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let template = dir.join("copy-job-pod.yaml");
        std::fs::write(&template, COPY_JOB_POD_TEMPLATE).unwrap();

        // 3. serve with install's certificate.
        let tls = Api::<Secret>::namespaced(client.clone(), &namespace)
            .get("privatize-tls")
            .await
            .unwrap();
        let data = tls.data.unwrap();
        std::fs::write(dir.join("tls.crt"), &data["tls.crt"].0).unwrap();
        std::fs::write(dir.join("tls.key"), &data["tls.key"].0).unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = system
            .privatize()
            .env("COPY_JOB_NAMESPACE", &namespace)
            .env("COPY_JOB_IMAGE", &node.image)
            .env(
                "PRIVATIZE_EXCLUDE_NAMESPACES",
                format!("kube-system,{namespace}"),
            )
            .env("PRIVATIZE_SWEEP_INTERVAL", "1s")
            .env("PRIVATIZE_SHUTDOWN_DELAY", "0s")
            // Its trust check reads no configuration another test registered.
            .env("PRIVATIZE_WEBHOOK_CONFIG", "privatize-test-no-such-config")
            // The credential writer: this system's namespaces only.
            .env("PRIVATIZE_CREDENTIAL_NAMESPACES", format!("{apps}*"))
            .envs(serve_env.iter().copied())
            .args(["serve", "--listen-address", "127.0.0.1"])
            .args(["--https-port", &https_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .args([
                "--swap-policy",
                swap_policy,
                "--copy-job-backoff-limit",
                "0",
            ])
            .arg("--copy-job-pod-template")
            .arg(&template)
            .arg("--tls-cert-path")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-path")
            .arg(dir.join("tls.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        system.serve = Some(child);
        system.wait_ready(http_port);

        // 4. The application namespace, enabled for ECR credentials; --ensure
        //    creates its pull Secret through serve's Secret webhook.
        let ns: Namespace = serde_json::from_value(json!({"metadata": {
            "name": apps,
            "labels": {"privatize.io/ecr-credentials": "enabled"}
        }}))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        cluster::wait_for_default_service_account(&client, &apps).await;
        let out = system
            .privatize()
            .args(["refresh-secrets", "--ensure", "--namespace", &apps])
            .args(["--output", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "refresh-secrets: {}", stderr(&out));
        let summary: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(
            summary["created"].as_array().map(Vec::len),
            Some(1),
            "{summary}"
        );
        system
    }

    /// `privatize` as a user with ECR_REGISTRY exported, against the cluster.
    pub fn privatize(&self) -> Command {
        let mut cmd = testbed().privatize();
        cmd.env("KUBECONFIG", &node().cluster.kubeconfig)
            .env("ECR_REGISTRY", &self.registry)
            .env("PRIVATIZE_TARGET_KIND", "ecr")
            .env("PRIVATIZE_EXCLUDE", "example.invalid");
        cmd
    }

    fn wait_ready(&mut self, http_port: u16) {
        let ready = format!("http://127.0.0.1:{http_port}/readyz");
        let start = Instant::now();
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &ready])
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            if let Some(status) = self.serve.as_mut().unwrap().try_wait().unwrap() {
                panic!("serve exited ({status}): {}", self.serve_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve never became ready: {}",
                self.serve_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of one metric sample of serve (`name{labels}` as printed), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Applies a Deployment of `image` running `script` in the apps namespace.
    pub async fn deployment(&self, name: &str, image: &str, replicas: i32, script: &str) {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "enableServiceLinks": false,
                        "containers": [{
                            "name": "app", "image": image,
                            "command": ["sh", "-c", script]
                        }]
                    }
                }
            }
        });
        let api: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), &self.apps);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(deployment).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("creating Deployment {name}: {e}"));
    }

    /// A bare pod of `image` running `script` in the apps namespace.
    pub async fn pod(&self, name: &str, image: &str, script: &str) -> Pod {
        self.pod_in(&self.apps, name, image, script).await
    }

    /// A bare pod of `image` running `script` in `namespace`.
    pub async fn pod_in(&self, namespace: &str, name: &str, image: &str, script: &str) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "enableServiceLinks": false,
                "containers": [{"name": "app", "image": image, "command": ["sh", "-c", script]}]
            }
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {namespace}/{name}: {e}"))
    }

    /// Another application namespace, `<apps>-<suffix>`, enabled for ECR
    /// credentials or not; no pull Secret in it. Deleted with the system.
    pub async fn namespace(&self, suffix: &str, enabled: bool) -> String {
        let name = format!("{}-{suffix}", self.apps);
        let labels = if enabled {
            json!({"privatize.io/ecr-credentials": "enabled"})
        } else {
            json!({})
        };
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        self.extra.lock().unwrap().push(name.clone());
        cluster::wait_for_default_service_account(&self.client, &name).await;
        name
    }

    /// The pods labelled `app=<name>` in the apps namespace, once there are `count`.
    pub async fn pods(&self, name: &str, count: usize) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.apps);
        let params = ListParams::default().labels(&format!("app={name}"));
        wait_for(&format!("{count} pods of {name}"), 60, || async {
            let pods = api.list(&params).await.unwrap().items;
            (pods.len() == count).then_some(pods)
        })
        .await
    }

    pub async fn delete_pod(&self, name: &str) {
        let _ = Api::<Pod>::namespaced(self.client.clone(), &self.apps)
            .delete(name, &DeleteParams::default())
            .await;
    }

    pub async fn pod_now(&self, name: &str) -> Pod {
        self.pod_now_in(&self.apps, name).await
    }

    pub async fn pod_now_in(&self, namespace: &str, name: &str) -> Pod {
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get(name)
            .await
            .unwrap()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(mut child) = self.serve.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        let _ = self
            .privatize()
            .args(["uninstall", "--namespace", &self.namespace])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut names = vec![self.apps.clone(), self.namespace.clone()];
        names.extend(self.extra.lock().unwrap().drain(..));
        let client = self.client.clone();
        crate::common::kube::block_on_thread(|| async move {
            for name in names {
                let _ = Api::<Namespace>::all(client.clone())
                    .delete(&name, &DeleteParams::background())
                    .await;
            }
        });
    }
}

/// The pod template the copy Jobs get on this node.
pub const COPY_JOB_POD_TEMPLATE: &str = "\
hostNetwork: true
containers:
- env:
  - name: AWS_ACCESS_KEY_ID
    valueFrom: {secretKeyRef: {name: aws-credentials, key: AWS_ACCESS_KEY_ID}}
  - name: AWS_SECRET_ACCESS_KEY
    valueFrom: {secretKeyRef: {name: aws-credentials, key: AWS_SECRET_ACCESS_KEY}}
";

/// Polls `check` every 200 ms until it returns a value, for at most `seconds`.
pub async fn wait_for<T, F, Fut>(what: &str, seconds: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(seconds),
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the pod still has scheduling gates.
pub fn gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

pub fn image_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

/// The running container's image digest (`…@sha256:…` in `imageID`), once Running.
pub fn running_digest(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let container = status.container_statuses.as_ref()?.first()?;
    container.state.as_ref()?.running.as_ref()?;
    let id = &container.image_id;
    id.rsplit_once('@').map(|(_, d)| d.to_string())
}

/// The digest the registry serves for a reference (curl, not privatize).
pub fn source_digest(reference: &str) -> String {
    let image = privatize::image::ImageRef::parse(reference).unwrap();
    let (status, body) =
        testbed().source_manifest(&image.repository, image.tag.as_deref().unwrap());
    assert_eq!(status, 200, "{reference} is not in the source registry");
    crate::common::sha256(&body)
}
