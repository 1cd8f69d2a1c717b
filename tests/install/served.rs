//! End to end on an apiserver of the test's own: `install --webhook-url`
//! registers a real `privatize serve`, run the way the installed Deployment
//! runs it (its args and env, install's TLS Secret) and as the server's
//! ServiceAccount, so every API call serve makes is checked against
//! install's RBAC. A pod in another namespace is admitted through the
//! registered webhook, gated, copied by a Job in the install namespace
//! running as the copy Jobs' account, and released.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;

use crate::cluster::{free_ports, PrivateCluster};
use crate::common::serve::http_get;
use crate::common::serve_gate::run_job_command_in;
use crate::common::{stderr, testbed, unique};
use crate::support::{set_status, Running};

/// The install namespace (the cluster is this test's alone).
const NS: &str = "privatize";
/// The namespace of the application pod.
const APPS: &str = "apps";
/// Labelled for ECR credentials, but not in `--credential-namespaces`.
const UNBOUND: &str = "unbound";
const IMAGE: &str = "127.0.0.1:15000/privatize/privatize:test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_serve_admits_gates_and_releases_a_pod_with_installs_rbac() {
    let cluster = PrivateCluster::start().await;
    let client = cluster.client.clone();
    let tb = testbed();
    let [https_port, http_port] = free_ports();
    let target_registry = format!("{}/install-e2e/{}", tb.target(), unique() % 1_000_000);
    let url = format!("https://127.0.0.1:{https_port}");

    // 0. Two namespaces labelled for ECR credentials; install binds
    //    privatize's Secret rights in APPS only.
    for name in [APPS, UNBOUND] {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {
            "name": name, "labels": {"privatize.io/ecr-credentials": "enabled"}
        }}))
        .unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }

    // 1. install, waiting for the rollout as it does by default.
    let install = Running(
        Command::new(env!("CARGO_BIN_EXE_privatize"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(["install", "--namespace", NS, "--image", IMAGE])
            .args(["--target-registry", &target_registry, "--webhook-url", &url])
            .args(["--credential-namespaces", APPS])
            // The target's CA: in the ConfigMap serve checks and the copy Job mounts.
            .arg("--ca-file")
            .arg(&tb.env["TARGET_CA_FILE"])
            .args(["--wait-timeout", "120"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment = wait_until("the Deployment is applied", || async {
        deployments.get_opt("privatize").await.unwrap()
    })
    .await;

    // 2. serve's own pod, as its ReplicaSet would make it from the template,
    //    with serve's IRSA identity as EKS's pod identity webhook injects it.
    let template = deployment.spec.unwrap().template;
    let mut own = Pod {
        metadata: ObjectMeta {
            name: Some("privatize-0".into()),
            labels: template.metadata.unwrap().labels,
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    };
    inject_irsa(&mut own, &tb.env["AWS_REGION"]);
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &own)
        .await
        .unwrap();

    // 3. serve as that pod runs it, as the server's ServiceAccount.
    let container = own.spec.as_ref().unwrap().containers[0].clone();
    let tls = Api::<Secret>::namespaced(client.clone(), NS)
        .get("privatize-tls")
        .await
        .unwrap()
        .data
        .unwrap();
    let dir = std::env::temp_dir().join(format!("privatize-install-serve-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    for key in ["tls.crt", "tls.key"] {
        std::fs::write(dir.join(key), &tls[key].0).unwrap();
    }
    let identity = cluster
        .service_account_kubeconfig(NS, "privatize-webhook")
        .await;
    let log = dir.join("serve.log");
    // The testbed's transport (moto, the target's CA, the plain-HTTP source) first.
    let mut cmd = tb.privatize();
    for env in container.env.iter().flatten() {
        // The CA file's path in the pod is the ConfigMap's mount: here, the testbed's file;
        // the AWS identity here is the testbed's (moto's keys), not the injected role.
        if env.name == "PRIVATIZE_CA_FILE" || env.name.starts_with("AWS_") {
            continue;
        }
        if let Some(value) = &env.value {
            cmd.env(&env.name, value);
        }
    }
    let mut serve = Running(
        cmd.env("POD_NAME", "privatize-0")
            .env("POD_NAMESPACE", NS)
            .env("KUBECONFIG", &identity)
            .env("PRIVATIZE_TARGET_KIND", "ecr")
            // The testbed's registries live on 127.0.0.1, which the default list excludes.
            .env("PRIVATIZE_EXCLUDE", "example.invalid")
            .args(container.args.as_deref().unwrap())
            .args(["--listen-address", "127.0.0.1"])
            .args(["--https-port", &https_port.to_string()])
            .args(["--http-port", &http_port.to_string()])
            .arg("--tls-cert-path")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key-path")
            .arg(dir.join("tls.key"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let http = format!("127.0.0.1:{http_port}").parse().unwrap();
    let start = Instant::now();
    while http_get(http, "/readyz").0 != 200 {
        assert!(serve.still_running(), "serve exited:\n{}", serve_log());
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve never became ready:\n{}",
            serve_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. The Deployment controller's part: both replicas ready. install then
    // registers the webhooks and returns.
    set_status(
        &deployments,
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    let (status, err) = install.finish(Duration::from_secs(60));
    assert!(status.success(), "{err}");
    // The labelled namespace install does not bind is named, with the grant.
    let unbound: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warning: namespace "))
        .collect();
    assert_eq!(
        unbound,
        [format!(
            "warning: namespace {UNBOUND} is labelled for ECR credentials, but privatize may not touch its Secrets: add it to --credential-namespaces, or let its owner run: kubectl create rolebinding privatize-credentials -n {UNBOUND} --clusterrole privatize-credentials --serviceaccount {NS}:privatize-webhook --serviceaccount {NS}:privatize-refresh"
        )],
        "{err}"
    );
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("MutatingWebhookConfiguration/privatize ") && last.ends_with(" created"),
        "{err}"
    );

    // 5. Read back: the pod webhook calls serve and trusts install's CA.
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("privatize")
        .await
        .unwrap();
    let pods_hook = &config.webhooks.as_ref().unwrap()[0];
    assert_eq!(pods_hook.name, "pods.privatize.io");
    assert_eq!(
        pods_hook.client_config.url.as_deref(),
        Some(format!("{url}/mutate/pods").as_str())
    );
    assert_eq!(
        pods_hook.client_config.ca_bundle.as_ref().unwrap().0,
        tls["ca.crt"].0
    );

    // 6. The managed pull Secret in APPS: serve's credential writer, as
    //    serve's account under install's RBAC and fences, writes its login.
    let pull_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "privatize-ecr", "labels": {"privatize.io/ecr-credentials": "managed"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), APPS);
    secrets
        .create(&PostParams::default(), &pull_secret)
        .await
        .unwrap();
    let written = wait_until("serve writes the pull Secret's login", || async {
        let secret = secrets.get("privatize-ecr").await.unwrap();
        secret
            .annotations()
            .contains_key("privatize.io/refreshed-at")
            .then_some(secret)
    })
    .await;
    let config: serde_json::Value =
        serde_json::from_slice(&written.data.unwrap()[".dockerconfigjson"].0).unwrap();
    assert_eq!(
        config["auths"][tb.target()]["password"],
        tb.env["TARGET_PASSWORD"].as_str()
    );
    // UNBOUND is labelled too, but privatize may not read its Secrets: an
    // Event on the namespace names the grant.
    let forbidden = wait_until("a CredentialsForbidden Event", || async {
        Api::<Event>::all(client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("CredentialsForbidden")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(UNBOUND)
            })
    })
    .await;
    assert_eq!(forbidden.type_.as_deref(), Some("Warning"));
    assert!(
        forbidden.note.as_deref().unwrap_or_default().contains(&format!(
            "kubectl create rolebinding privatize-credentials -n {UNBOUND} --clusterrole privatize-credentials --serviceaccount {NS}:privatize-webhook --serviceaccount {NS}:privatize-refresh"
        )),
        "{forbidden:?}"
    );
    let (source, source_digest) = tb.image("tiny");
    let target = privatize::image::TargetRegistry::parse(&target_registry)
        .unwrap()
        .target_reference(&privatize::image::ImageRef::parse(&source).unwrap())
        .to_string();
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let app: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "app", "image": source}]}
    }))
    .unwrap();
    let admitted = pods.create(&PostParams::default(), &app).await.unwrap();
    let spec = admitted.spec.as_ref().unwrap();
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(target.as_str()),
        "rewritten by the registered webhook:\n{}",
        serve_log()
    );
    assert_eq!(gates(&admitted), ["privatize.io/mirror"]);
    let pull_secrets: Vec<&str> = spec
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(pull_secrets, ["privatize-ecr"]);

    // 7. One copy Job in the install namespace, as the account with no API rights.
    let jobs = crate::common::serve_gate::wait_for_copy_jobs(&client, NS, 1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    let job_pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(job_pod.service_account_name.as_deref(), Some("privatize"));
    assert_eq!(job_pod.automount_service_account_token, Some(false));
    assert_eq!(job_pod.containers[0].image.as_deref(), Some(IMAGE));
    // One identity per job: serve's region and STS setting travel, its role,
    // token file and token volume do not (the Job's own account gives its own).
    let job_env: Vec<&str> = job_pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .filter(|n| n.starts_with("AWS_"))
        .collect();
    assert_eq!(
        job_env,
        [
            "AWS_STS_REGIONAL_ENDPOINTS",
            "AWS_REGION",
            "AWS_DEFAULT_REGION"
        ]
    );
    assert!(
        !job_pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "aws-iam-token"),
        "{job_pod:?}"
    );

    // 8. The Job controller's part: run the Job's command, mark it complete.
    let out = run_job_command_in(job, &cluster.kubeconfig);
    assert!(out.status.success(), "the Job failed: {}", stderr(&out));
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    Api::<Job>::namespaced(client.clone(), NS)
        .patch_status(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}
                ]
            }})),
        )
        .await
        .unwrap();

    // 9. serve releases the pod and says so with an Event.
    let released = wait_until("the pod is released", || async {
        let pod = pods.get("app").await.unwrap();
        (gates(&pod).is_empty() && !pod.labels().contains_key("privatize.io/gated")).then_some(pod)
    })
    .await;
    assert_eq!(
        released.spec.unwrap().containers[0].image.as_deref(),
        Some(target.as_str())
    );
    assert_eq!(
        crate::common::serve_gate::target_digest(&target),
        source_digest,
        "the mirrored image keeps the source digest"
    );
    let mirrored = wait_until("an ImageMirrored Event", || async {
        let events = Api::<Event>::namespaced(client.clone(), APPS)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        events.into_iter().find(|e| {
            e.reason.as_deref() == Some("ImageMirrored")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app")
        })
    })
    .await;
    assert_eq!(mirrored.type_.as_deref(), Some("Normal"));
    // No call of serve's was refused: install's RBAC covers all it does.
    let log = serve_log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "serve was refused an API call:\n{log}"
    );

    // 10. uninstall: the webhook configuration first.
    let out = Command::new(env!("CARGO_BIN_EXE_privatize"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["uninstall", "--namespace", NS])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out)
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("MutatingWebhookConfiguration/privatize ")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// What EKS's pod identity webhook adds to a pod whose ServiceAccount has an
/// `eks.amazonaws.com/role-arn`: the role, the token file and its projected volume.
fn inject_irsa(pod: &mut Pod, region: &str) {
    let spec = pod.spec.as_mut().unwrap();
    let injected: Pod = serde_json::from_value(json!({"spec": {
        "containers": [{
            "name": "privatize",
            "env": [
                {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                {"name": "AWS_REGION", "value": region},
                {"name": "AWS_DEFAULT_REGION", "value": region},
                {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/privatize-pull"},
                {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"}
            ],
            "volumeMounts": [{"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}]
        }],
        "volumes": [{"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}]
    }}))
    .unwrap();
    let mut injected = injected.spec.unwrap();
    let from = injected.containers.remove(0);
    let container = &mut spec.containers[0];
    container
        .env
        .get_or_insert_with(Vec::new)
        .extend(from.env.unwrap());
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend(from.volume_mounts.unwrap());
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(injected.volumes.unwrap());
}

fn gates(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.name)
        .collect()
}

/// Polls `probe` until it gives a value (30 s at most).
async fn wait_until<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waited 30s for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
