//! Harness for the pod flow: `privatize serve` against the testbed (moto,
//! the registries, the apiserver), registered by URL for one test namespace
//! only; and the Job controller's part, played by the test: run a copy
//! Job's own command line, then write the Job's status.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use super::kube::{config_map_data_blocking, kubeconfig_path, put_ca_config_map, TestNamespace};
use super::testbed;

/// A running `serve` for one test namespace; stopped (and unregistered) on drop.
pub struct GateServe {
    child: Child,
    pub https_port: u16,
    pub http_port: u16,
    pub prefix: String,
    webhooks: Vec<String>,
    dir: std::path::PathBuf,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl GateServe {
    /// Starts serve and registers it for pods in `ns`. The copy-Job
    /// namespace first gets the CA ConfigMap, as `install --ca-file` makes it.
    pub async fn start(ns: &TestNamespace, extra: &[&str]) -> Self {
        put_testbed_ca(ns, extra).await;
        let mut serve = Self::spawn(ns, extra, free_port());
        serve.register(ns).await;
        serve
    }

    /// Starts serve on a given HTTPS port (a restart) and registers it.
    pub async fn start_on(ns: &TestNamespace, extra: &[&str], port: u16) -> Self {
        put_testbed_ca(ns, extra).await;
        let mut serve = Self::spawn(ns, extra, port);
        serve.register(ns).await;
        serve
    }

    /// A second replica: the same settings, its gate controller only (the
    /// apiserver keeps calling the first).
    pub async fn start_unregistered(ns: &TestNamespace, _first: &GateServe) -> Self {
        let serve = Self::spawn(ns, &[], free_port());
        serve.wait_ready();
        serve
    }

    /// Runs serve expecting it to stop at start; its output (killed after 20s).
    pub fn run_to_exit(ns: &TestNamespace, extra: &[&str]) -> Output {
        let (mut cmd, _) = Self::command(ns, extra, free_port());
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("starting serve");
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    fn spawn(ns: &TestNamespace, extra: &[&str], https_port: u16) -> Self {
        let (mut cmd, dir) = Self::command(ns, extra, https_port);
        let prefix = format!("gate/{}", ns.name);
        let http_port: u16 = cmd
            .get_args()
            .skip_while(|a| *a != "--http-port")
            .nth(1)
            .and_then(|p| p.to_str()?.parse().ok())
            .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = cmd.stderr(log).spawn().expect("starting privatize serve");
        Self {
            child,
            https_port,
            http_port,
            prefix,
            webhooks: Vec::new(),
            dir,
        }
    }

    fn command(
        ns: &TestNamespace,
        extra: &[&str],
        https_port: u16,
    ) -> (Command, std::path::PathBuf) {
        let tb = testbed();
        let dir = std::env::temp_dir().join(format!("privatize-serve-{}", super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let issued = privatize::tls::issue(&["127.0.0.1".into(), "localhost".into()]).unwrap();
        std::fs::write(dir.join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), &issued.key_pem).unwrap();
        std::fs::write(dir.join("ca.crt"), &issued.ca_pem).unwrap();
        let prefix = format!("gate/{}", ns.name);
        let http_port = free_port();
        let mut cmd = tb.privatize();
        cmd.env("KUBECONFIG", kubeconfig_path())
            .env("ECR_REGISTRY", format!("{}/{prefix}", tb.target()))
            .env("PRIVATIZE_TARGET_KIND", "ecr")
            // The testbed's registries live on 127.0.0.1, which the default list excludes.
            .env("PRIVATIZE_EXCLUDE", "example.invalid")
            .env("PRIVATIZE_EXCLUDE_NAMESPACES", "kube-system")
            .env("COPY_JOB_NAMESPACE", &ns.name)
            .env("COPY_JOB_IMAGE", "127.0.0.1:15000/privatize/privatize:test")
            .env("PRIVATIZE_SWEEP_INTERVAL", "1s")
            .env("PRIVATIZE_SHUTDOWN_DELAY", "0s")
            // Its trust check reads no configuration another test registered.
            .env("PRIVATIZE_WEBHOOK_CONFIG", "privatize-test-no-such-config")
            .args(["serve", "--https-port", &https_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .arg("--tls-cert-path")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-path")
            .arg(dir.join("tls.key"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        (cmd, dir)
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &url])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve never became ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What serve wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Registers this serve for pods in one more namespace.
    pub async fn register(&mut self, ns: &TestNamespace) {
        self.wait_ready();
        let ca = std::fs::read(self.dir.join("ca.crt")).unwrap();
        let name = format!("{}-{}", ns.name, self.https_port);
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": name},
            "webhooks": [{
                "name": "pods.privatize.io",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{}/mutate/pods", self.https_port),
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(ca)
                },
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"},
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}},
                "admissionReviewVersions": ["v1", "v1beta1"],
                "sideEffects": "NoneOnDryRun",
                // Fail, not Ignore: a test must see an error rather than an unchanged pod.
                "failurePolicy": "Fail",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 10
            }]
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(ns.client.clone())
            .create(&PostParams::default(), &config)
            .await
            .unwrap();
        self.webhooks.push(name);
    }

    /// The private reference serve gives a source.
    pub fn target_of(&self, source: &str) -> String {
        let source = privatize::image::ImageRef::parse(source).unwrap();
        let registry = privatize::image::TargetRegistry::parse(&format!(
            "{}/{}",
            testbed().target(),
            self.prefix
        ))
        .unwrap();
        registry.target_reference(&source).to_string()
    }

    /// Mirrors a source with sync-image, under this serve's prefix.
    pub fn sync(&self, source: &str) -> Output {
        testbed()
            .privatize()
            .args([
                "sync-image",
                "--target-kind",
                "ecr",
                "--target",
                &self.target_of(source),
                source,
            ])
            .output()
            .unwrap()
    }
}

impl Drop for GateServe {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for name in self.webhooks.drain(..) {
            super::kube::delete_from_drop::<MutatingWebhookConfiguration>(&name);
        }
    }
}

/// The copy-Job namespace of serve's flags (`ns` unless --copy-job-namespace)
/// gets the testbed's CA in the ConfigMap serve checks at start.
async fn put_testbed_ca(ns: &TestNamespace, extra: &[&str]) {
    let namespace = extra
        .iter()
        .skip_while(|a| **a != "--copy-job-namespace")
        .nth(1)
        .copied()
        .unwrap_or(&ns.name);
    let pem = std::fs::read_to_string(&testbed().env["TARGET_CA_FILE"]).unwrap();
    put_ca_config_map(&ns.client, namespace, &pem).await;
}

/// Runs a copy Job's own command line (its args and plain env values) with
/// the testbed's transport settings, as the Job's pod would.
pub fn run_job_command(job: &Job) -> Output {
    run_job_command_in(job, &kubeconfig_path())
}

/// The same on the cluster of `kubeconfig`. Plays the kubelet for ConfigMap
/// volumes (the CA bundle): their data is written to a directory, and env
/// values under their mount path point there.
pub fn run_job_command_in(job: &Job, kubeconfig: &std::path::Path) -> Output {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    let namespace = job.metadata.namespace.as_deref().unwrap();
    let mut mounted = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let config_map = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.config_map.as_ref());
        let Some(config_map) = config_map else {
            continue;
        };
        let dir = std::env::temp_dir().join(format!("privatize-volume-{}", super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        for (key, value) in config_map_data_blocking(kubeconfig, namespace, &config_map.name) {
            std::fs::write(dir.join(key), value).unwrap();
        }
        mounted.push((mount.mount_path.clone(), dir));
    }
    let mut cmd = testbed().privatize();
    for env in container.env.iter().flatten() {
        if let Some(value) = &env.value {
            let value = mounted
                .iter()
                .find_map(|(path, dir)| {
                    let rest = value.strip_prefix(path.as_str())?;
                    Some(format!("{}{rest}", dir.display()))
                })
                .unwrap_or_else(|| value.clone());
            cmd.env(&env.name, value);
        }
    }
    // The Job's summary goes to its termination message; here, to a file.
    let summary = std::env::temp_dir().join(format!("privatize-summary-{}", super::unique()));
    cmd.env("PRIVATIZE_SUMMARY_FILE", &summary);
    cmd.args(container.args.as_deref().unwrap_or_default());
    let out = cmd.output().expect("running the Job's command");
    let _ = std::fs::remove_file(&summary);
    out
}

/// Writes a finished Job status, as the Job controller would.
pub async fn complete_job(client: &kube::Client, namespace: &str, job: &Job, success: bool) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = if success {
        json!({"status": {
            "startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}
            ]
        }})
    } else {
        json!({"status": {
            "startTime": now, "failed": 2, "active": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": now}
            ]
        }})
    };
    Api::<Job>::namespaced(client.clone(), namespace)
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .expect("writing the Job's status");
}

/// The digest of a reference in the target registry, read with curl.
pub fn target_digest(reference: &str) -> String {
    let image = privatize::image::ImageRef::parse(reference).unwrap();
    let tag = image.tag.clone().or(image.digest.clone()).unwrap();
    let (status, body) = testbed().target_manifest(&image.repository, &tag);
    assert_eq!(status, 200, "{reference} is not in the target");
    super::sha256(&body)
}

impl GateServe {
    /// The value of one metric sample (`name{labels}` as printed), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let out = Command::new("curl").args(["-sf", &url]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// Deletes a manifest from the target registry (a lifecycle rule pruning it).
pub fn prune_from_target(reference: &str) {
    let tb = testbed();
    let image = privatize::image::ImageRef::parse(reference).unwrap();
    let digest = target_digest(reference);
    let url = format!(
        "https://{}/v2/{}/manifests/{digest}",
        tb.target(),
        image.repository
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "--cacert",
        ])
        .arg(&tb.env["TARGET_CA_FILE"])
        .arg("-u")
        .arg(format!(
            "{}:{}",
            tb.env["TARGET_USER"], tb.env["TARGET_PASSWORD"]
        ))
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "202",
        "deleting {url}"
    );
}

/// The copy Jobs in `namespace` once there are `count` of them: the gate
/// controller makes them shortly after a pod exists (never in the
/// admission). Panics after 15 s.
pub async fn wait_for_copy_jobs(client: &kube::Client, namespace: &str, count: usize) -> Vec<Job> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::ListParams::default().labels("app.kubernetes.io/managed-by=privatize");
    let start = Instant::now();
    loop {
        let jobs = api.list(&params).await.unwrap().items;
        if jobs.len() >= count {
            return jobs;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{count} copy Job(s) in {namespace}: {} after 15 s",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
