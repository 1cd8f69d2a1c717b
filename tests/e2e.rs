//! The whole story on the testbed, as the README tells it: `install
//! --webhook-url`, `serve` answering at that URL with install's certificate,
//! `refresh-secrets --ensure` creating the pull Secret, a gated pod released
//! once its copy Job's command ran, a login with the injected credentials
//! pulling the mirrored manifest, and `refresh-secrets --force`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use common::kube::{kubeconfig_path, TestNamespace};
use common::serve_gate::{
    complete_job, free_port, run_job_command, target_digest, wait_for_copy_jobs,
};
use common::{stderr, stdout, testbed};

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// `privatize` against the testbed, as a user with ECR_REGISTRY exported.
fn privatize(registry: &str) -> Command {
    let mut cmd = testbed().privatize();
    cmd.env("KUBECONFIG", kubeconfig_path())
        .env("ECR_REGISTRY", registry)
        .env("PRIVATIZE_TARGET_KIND", "ecr")
        .env("PRIVATIZE_EXCLUDE", "example.invalid");
    cmd
}

fn refresh(registry: &str, namespace: &str, extra: &[&str]) -> Value {
    let out = privatize(registry)
        .args([
            "refresh-secrets",
            "--namespace",
            namespace,
            "--output",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "refresh-secrets {extra:?}: {}",
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_serve_credentials_gate_copy_login_and_refresh() {
    let tb = testbed();
    let app = TestNamespace::new("e2e").await;
    let system = format!("privatize-e2e-{}", common::unique() % 1_000_000);
    let registry = format!("{}/e2e-{}", tb.target(), common::unique() % 1_000_000);
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");

    // 1. install with the webhook at a URL (no kubelet here: no rollout to wait for).
    let out = privatize(&registry)
        .args([
            "install",
            "--namespace",
            &system,
            "--webhook-url",
            &url,
            "--no-wait",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "install: {}", stderr(&out));
    let uninstall = scopeguard(system.clone(), registry.clone());

    // 2. serve with the certificate install made.
    let secrets: Api<Secret> = Api::namespaced(app.client.clone(), &system);
    let tls = secrets.get("privatize-tls").await.unwrap();
    let dir = std::env::temp_dir().join(format!("privatize-e2e-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = tls.data.unwrap();
    std::fs::write(dir.join("tls.crt"), &data["tls.crt"].0).unwrap();
    std::fs::write(dir.join("tls.key"), &data["tls.key"].0).unwrap();
    let http_port = free_port();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let serve = Stop(
        privatize(&registry)
            .env("COPY_JOB_NAMESPACE", &system)
            .env("COPY_JOB_IMAGE", "127.0.0.1:15000/privatize/privatize:e2e")
            .env(
                "PRIVATIZE_EXCLUDE_NAMESPACES",
                format!("kube-system,{system}"),
            )
            .env("PRIVATIZE_SWEEP_INTERVAL", "1s")
            .env("PRIVATIZE_SHUTDOWN_DELAY", "0s")
            // Its trust check reads no configuration another test registered.
            .env("PRIVATIZE_WEBHOOK_CONFIG", "privatize-test-no-such-config")
            .args(["serve", "--listen-address", "127.0.0.1"])
            .args([
                "--https-port",
                &port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .arg("--tls-cert-path")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-path")
            .arg(dir.join("tls.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{http_port}/readyz");
    let start = Instant::now();
    while !Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &ready])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "serve never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // 3. A namespace enabled for ECR credentials; --ensure creates its pull Secret.
    Api::<Namespace>::all(app.client.clone())
        .patch(
            &app.name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"privatize.io/ecr-credentials": "enabled"}}}),
            ),
        )
        .await
        .unwrap();
    let ensured = refresh(&registry, &app.name, &["--ensure"]);
    assert_eq!(ensured["created"].as_array().unwrap().len(), 1, "{ensured}");
    let pull: Secret = Api::<Secret>::namespaced(app.client.clone(), &app.name)
        .get("privatize-ecr")
        .await
        .unwrap();
    let config: Value =
        serde_json::from_slice(&pull.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    let auth = config["auths"][tb.target()]["auth"]
        .as_str()
        .unwrap()
        .to_string();
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("AWS:{}", tb.env["TARGET_PASSWORD"]));
    assert_eq!(auth, expected);

    // 4. A pod with a multi-platform public image: gated, with the pull Secret.
    let (source, source_digest) = tb.image("oci-index");
    let pods: Api<Pod> = Api::namespaced(app.client.clone(), &app.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": source}]}
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    let spec = created.spec.as_ref().unwrap();
    let target = spec.containers[0].image.clone().unwrap();
    assert!(target.starts_with(&format!("{registry}/")), "{target}");
    assert_eq!(
        spec.scheduling_gates.as_ref().unwrap()[0].name,
        "privatize.io/mirror"
    );
    let pull_secrets: Vec<String> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(pull_secrets, ["privatize-ecr"]);

    // 5. The Job's command, the Job marked complete, the pod released, digests equal.
    let jobs = wait_for_copy_jobs(&app.client, &system, 1).await;
    assert_eq!(jobs.len(), 1);
    let copied = run_job_command(&jobs[0]);
    assert!(copied.status.success(), "{}", stderr(&copied));
    complete_job(&app.client, &system, &jobs[0], true).await;
    let start = Instant::now();
    loop {
        let now = pods.get("web").await.unwrap();
        if now
            .spec
            .as_ref()
            .unwrap()
            .scheduling_gates
            .as_ref()
            .is_none_or(|g| g.is_empty())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod was never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(target_digest(&target), source_digest);

    // 6. A login with the injected credentials pulls the mirrored manifest.
    std::fs::write(
        dir.join("auth.json"),
        &pull.data.as_ref().unwrap()[".dockerconfigjson"].0,
    )
    .unwrap();
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--authfile"])
        .arg(dir.join("auth.json"))
        .args(["--cert-dir", &tb.env["TARGET_CERT_DIR"]])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo with the injected login: {}",
        stderr(&out)
    );
    assert_eq!(common::sha256(&out.stdout), source_digest);

    // 7. --force refreshes it; a second plain run has nothing to do.
    let before = pull.annotations()["privatize.io/refreshed-at"].clone();
    let forced = refresh(&registry, &app.name, &["--force"]);
    assert_eq!(forced["refreshed"].as_array().unwrap().len(), 1, "{forced}");
    let after = Api::<Secret>::namespaced(app.client.clone(), &app.name)
        .get("privatize-ecr")
        .await
        .unwrap();
    assert!(after.annotations()["privatize.io/refreshed-at"] > before);
    let again = refresh(&registry, &app.name, &[]);
    assert_eq!(again["refreshed"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["fresh"].as_array().unwrap().len(), 1, "{again}");
    drop(serve);
    drop(uninstall);
}

/// Uninstalls when dropped, so a failing test leaves no cluster-wide webhook behind.
struct Uninstall(String, String);

fn scopeguard(namespace: String, registry: String) -> Uninstall {
    Uninstall(namespace, registry)
}

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = privatize(&self.1)
            .args(["uninstall", "--namespace", &self.0])
            .output();
    }
}
