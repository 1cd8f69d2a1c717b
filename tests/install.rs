//! `privatize install` / `uninstall` against the testbed's kube-apiserver.
//! The objects are cluster-wide by name, so these tests run one at a time;
//! the end-to-end test with a real serve (served.rs) has an apiserver of its own.

#[path = "install/cluster.rs"]
mod cluster;
mod common;
#[path = "install/fences.rs"]
mod fences;
#[path = "install/placing.rs"]
mod placing;
#[path = "install/served.rs"]
mod served;
#[path = "install/support.rs"]
mod support;
#[path = "install/upgrades.rs"]
mod upgrades;

use std::collections::BTreeMap;

use common::kube::{client, privatize};
use common::stderr;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use support::*;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// serve's IRSA role (pull-only) and the copy Jobs' (push), as install takes them.
const PULL_ROLE: &str = "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/privatize-pull";
const PUSH_ROLE: &str = "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/privatize-push";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_creates_every_object_as_specified_and_twice_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    let first = install(
        &ns,
        &[
            "--target-registry",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--webhook-service-account-annotation",
            PULL_ROLE,
            "--copy-job-service-account-annotation",
            PUSH_ROLE,
            "--source-credentials-secret",
            "dockerhub",
        ],
    );
    assert!(
        stderr(&first).contains(&format!(
            "warning: Secret dockerhub not found in {ns}: copy Jobs cannot start until it exists"
        )),
        "{}",
        stderr(&first)
    );
    assert_eq!(
        stderr(&first).lines().last(),
        Some(
            "--no-wait: the webhooks are live now, before Deployment privatize is available: \
             until it is, pods are admitted unchanged and managed Secrets cannot be created or updated"
        ),
        "{}",
        stderr(&first)
    );

    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("privatize")
        .await
        .unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("privatize-webhook")
    );
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    // serve's shutdown: /readyz fails 5s, then 20s for requests in flight.
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    // serve finds its own image in its pod by this container name.
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(container.name, "privatize");
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/privatize:test")
    );
    assert_eq!(container.args.as_deref(), Some(&["serve".to_string()][..]));
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (get.path.clone().unwrap(), get.port.clone())
    };
    let http = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into());
    assert_eq!(
        probe(&container.readiness_probe),
        ("/readyz".to_string(), http.clone())
    );
    assert_eq!(
        probe(&container.liveness_probe),
        ("/healthz".to_string(), http)
    );
    let ports: Vec<(Option<String>, i32)> = container
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [(Some("https".into()), 8443), (Some("http".into()), 8080)],
        "serve's default ports"
    );
    let env: BTreeMap<_, _> = container
        .env
        .iter()
        .flatten()
        .map(|e| {
            let field = e
                .value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .map(|f| format!("fieldRef:{}", f.field_path));
            (e.name.as_str(), e.value.clone().or(field).unwrap())
        })
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("COPY_JOB_NAMESPACE", ns.clone()),
            ("COPY_JOB_IMAGE", "registry.example/privatize:test".into()),
            ("COPY_JOB_SERVICE_ACCOUNT_NAME", "privatize".into()),
            ("PRIVATIZE_EXCLUDE_NAMESPACES", format!("kube-system,{ns}")),
            ("PRIVATIZE_LOG_FORMAT", "json".into()),
            ("POD_NAME", "fieldRef:metadata.name".into()),
            ("POD_NAMESPACE", "fieldRef:metadata.namespace".into()),
            ("PRIVATIZE_TLS_SECRET", "privatize-tls".into()),
            (
                "ECR_REGISTRY",
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into()
            ),
            ("PRIVATIZE_SOURCE_CREDENTIALS_SECRET", "dockerhub".into()),
        ])
    );

    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get("privatize")
        .await
        .unwrap();
    assert_eq!(
        pdb.spec.unwrap().min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let service = Api::<Service>::namespaced(client.clone(), &ns)
        .get("privatize")
        .await
        .unwrap();
    let https = service
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .unwrap();
    assert_eq!(https.port, 443);
    // One identity per job: serve pulls, the copy Jobs push, the CronJob has none.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    for (account, role) in [
        (
            "privatize-webhook",
            Some("arn:aws:iam::123456789012:role/privatize-pull"),
        ),
        (
            "privatize",
            Some("arn:aws:iam::123456789012:role/privatize-push"),
        ),
        ("privatize-refresh", None),
    ] {
        let annotations = accounts.get(account).await.unwrap().annotations().clone();
        assert_eq!(
            annotations
                .get("eks.amazonaws.com/role-arn")
                .map(String::as_str),
            role,
            "{account}"
        );
        assert_eq!(annotations.len(), usize::from(role.is_some()), "{account}");
    }
    let cron = Api::<CronJob>::namespaced(client.clone(), &ns)
        .get("privatize-refresh-secrets")
        .await
        .unwrap();
    let cron_spec = cron.spec.unwrap();
    assert_eq!(cron_spec.schedule, "0 * * * *");
    let cron_pod = cron_spec.job_template.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        cron_pod.containers[0].args.as_deref().unwrap()[0],
        "refresh-secrets"
    );

    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("privatize-tls")
        .await
        .unwrap();
    let ca = secret.data.unwrap()["ca.crt"].0.clone();
    let config = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get("privatize")
        .await
        .unwrap();
    let hooks = config.webhooks.unwrap();
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pods.privatize.io",
            "secrets.privatize.io",
            "ecr-anywhere-secrets.privatize.io"
        ]
    );
    for hook in &hooks {
        assert_eq!(
            hook.client_config.ca_bundle.as_ref().map(|b| &b.0),
            Some(&ca),
            "{}",
            hook.name
        );
        assert_eq!(hook.admission_review_versions, ["v1", "v1beta1"]);
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        // Above serve's admission budget (5s), which answers within it.
        assert_eq!(hook.timeout_seconds, Some(10), "{}", hook.name);
        assert!(hook.client_config.url.as_deref().unwrap().starts_with(URL));
        let excluded = hook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert!(
            excluded
                .iter()
                .any(|e| e.operator == "NotIn" && e.values.as_ref().unwrap().contains(&ns)),
            "{} must skip {ns}",
            hook.name
        );
    }
    assert_eq!(hooks[0].failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(hooks[0].side_effects, "NoneOnDryRun");
    assert_eq!(hooks[1].failure_policy.as_deref(), Some("Fail"));
    assert_eq!(hooks[2].failure_policy.as_deref(), Some("Fail"));
    let pod_ops: Vec<String> = hooks[0]
        .rules
        .iter()
        .flatten()
        .map(|r| format!("{:?} {:?}", r.operations, r.resources))
        .collect();
    assert_eq!(
        pod_ops,
        [
            r#"Some(["CREATE"]) Some(["pods"])"#,
            r#"Some(["UPDATE"]) Some(["pods/ephemeralcontainers"])"#
        ]
    );

    assert_rbac_as_specified(&client, &ns).await;

    // Running it again changes nothing at all (and, the source-credentials
    // Secret now being there, warns of nothing).
    let credentials: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "dockerhub"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\": {}}"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &credentials)
        .await
        .unwrap();
    let before = everything(&client, &ns).await;
    assert_eq!(
        before.keys().map(String::as_str).collect::<Vec<_>>(),
        installed_objects(&ns),
        "exactly these objects, no more, no fewer"
    );
    let again = install(
        &ns,
        &[
            "--target-registry",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--webhook-service-account-annotation",
            PULL_ROLE,
            "--copy-job-service-account-annotation",
            PUSH_ROLE,
            "--source-credentials-secret",
            "dockerhub",
        ],
    );
    assert!(
        stderr(&again).contains("certificate kept"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again)
            .lines()
            // Other tests' labelled namespaces on this shared apiserver are named too.
            .filter(|l| !l.starts_with("--no-wait: ") && !l.starts_with("warning: namespace "))
            .all(|l| l.ends_with(" unchanged") || l.ends_with(" certificate kept")),
        "{}",
        stderr(&again)
    );
    assert_eq!(everything(&client, &ns).await, before);

    // The Helm hook's path: only the webhook configuration goes.
    let out = privatize()
        .args(["uninstall", "--webhook-only", "--namespace", &ns])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt("privatize")
        .await
        .unwrap()
        .is_none());
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get_opt("privatize")
            .await
            .unwrap()
            .is_some(),
        "--webhook-only keeps the rest"
    );

    uninstall(&ns);
    let left = everything(&client, &ns).await;
    assert!(left.is_empty(), "uninstall left: {left:?}");
    uninstall(&ns); // and again: what is gone stays gone, without errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_without_a_target_registry_refuses_before_touching_the_cluster() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let installed = InstallNamespace::new();
    let out = privatize()
        .env_remove("ECR_REGISTRY")
        .args(["install", "--namespace", &installed.0, "--webhook-url", URL])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: no target registry: pass --target-registry REGISTRY[/PREFIX] (or set ECR_REGISTRY); serve cannot start without one\n"
    );
    assert!(Api::<Namespace>::all(client().await)
        .get_opt(&installed.0)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checked_in_manifest_passes_the_apiservers_validation() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    // Namespaced documents are validated in their namespace, which must exist
    // and not be terminating (an earlier uninstall on this testbed, which has
    // no namespace controller, leaves `privatize` so): a fresh one stands in.
    let ns = format!("privatize-manifest-{}", common::unique() % 1_000_000);
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/privatize.yaml"
    ))
    .unwrap()
    .replace("  namespace: privatize\n", &format!("  namespace: {ns}\n"));
    let mut applied = common::kube::server_side_dry_run(&client, &yaml).await;
    applied.sort();
    // The checked-in manifest has no TLS Secret: gen-certs makes it.
    let mut expected = installed_objects("privatize");
    expected.retain(|o| o != "Secret/privatize-tls");
    assert_eq!(applied, expected);
    assert!(
        Api::<Deployment>::namespaced(client.clone(), "privatize")
            .get_opt("privatize")
            .await
            .unwrap()
            .is_none(),
        "dry-run must store nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_registers_no_webhook_before_the_deployment_is_available() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let configs = Api::<MutatingWebhookConfiguration>::all(client().await);
    let _ = configs.delete("privatize", &Default::default()).await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    // No kubelet runs in the testbed, so the Deployment never becomes available.
    let out = privatize()
        .args([
            "install",
            "--namespace",
            &ns,
            "--webhook-url",
            URL,
            "--image",
            "registry.example/privatize:test",
            "--target-registry",
            TARGET,
            "--wait-timeout",
            "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Its secret webhooks are failurePolicy: Fail: registered now, they would
    // refuse every managed Secret while no server answers.
    assert!(
        configs.get_opt("privatize").await.unwrap().is_none(),
        "the webhook configuration was registered before the rollout"
    );
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "error: webhook configuration not registered: waiting for Deployment privatize in {ns} to roll out: generation 1 not yet observed by the Deployment controller after 2s"
        )),
        "{err}"
    );
    assert!(!err.contains("MutatingWebhookConfiguration"), "{err}");
    uninstall(&ns);
}

/// A pod as serve leaves it at the gate: image rewritten under `target`, the
/// original recorded, the gate and its label.
fn gated_pod(name: &str, image: &str, original: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {"privatize.io/gated": "true", "app": "web"},
            "annotations": {"privatize.io/original-images": serde_json::json!({"app": original}).to_string()}
        },
        "spec": {
            "schedulingGates": [{"name": "example.com/other"}, {"name": "privatize.io/mirror"}],
            "containers": [{"name": "app", "image": image}]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_releases_every_gated_pod_with_its_original_images_and_leaves_other_installations_pods(
) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::PostParams;
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let installed = InstallNamespace::new();
    install(&installed.0, &[]);
    let app = common::kube::TestNamespace::new("uninstall-gated").await;
    let pods: Api<Pod> = Api::namespaced(app.client.clone(), &app.name);
    let ours = format!("{TARGET}/docker.io/library/nginx:1.27");
    let theirs = "other.example/mirror/docker.io/library/redis:7";
    for pod in [
        gated_pod("ours", &ours, "nginx:1.27"),
        gated_pod("theirs", theirs, "redis:7"),
    ] {
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let pending: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pending", "labels": {"privatize.io/copy-pending": "true"}},
        "spec": {"containers": [{"name": "app", "image": "quay.io/org/app:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();

    // The user's environment names another registry: serve's Deployment wins.
    let out = privatize()
        .env(
            "ECR_REGISTRY",
            "999999999999.dkr.ecr.us-east-1.amazonaws.com",
        )
        .args(["uninstall", "--namespace", &installed.0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stderr(&out);
    let first_lines: Vec<&str> = report.lines().take(2).collect();
    assert!(
        first_lines[0].starts_with("MutatingWebhookConfiguration/privatize")
            && first_lines[1].starts_with("gated pods")
            && first_lines[1].contains(&format!(
                " 1 released (images under {TARGET} set back to their originals), 1 copy-pending unlabelled"
            )),
        "{report}"
    );

    let released = pods.get("ours").await.unwrap();
    let spec = released.spec.as_ref().unwrap();
    assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.27"));
    let gates: Vec<&str> = spec
        .scheduling_gates
        .iter()
        .flatten()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(gates, ["example.com/other"], "only privatize's gate goes");
    assert!(!released.labels().contains_key("privatize.io/gated"));
    assert_eq!(released.labels()["app"], "web");

    let other = pods.get("theirs").await.unwrap();
    assert_eq!(
        other
            .spec
            .as_ref()
            .unwrap()
            .scheduling_gates
            .as_ref()
            .unwrap()
            .len(),
        2,
        "another installation's pod was released"
    );
    assert!(!pods
        .get("pending")
        .await
        .unwrap()
        .labels()
        .contains_key("privatize.io/copy-pending"));
}
