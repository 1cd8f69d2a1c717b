//! The Helm chart renders the same objects as `privatize install --dry-run`,
//! and the apiserver accepts what it renders (server-side dry-run).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use common::helm;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn helm_template(namespace: &str, extra: &[&str]) -> String {
    run(Command::new(helm())
        .args([
            "template",
            "privatize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/privatize"),
            "--namespace",
            namespace,
        ])
        .args(extra))
}

fn install_dry_run(namespace: &str, extra: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_privatize"))
        .args(["install", "--dry-run", "--namespace", namespace])
        .args(extra))
}

/// `Kind/namespace/name` → object, without what only one side has: the TLS
/// Secret and caBundle (install adds them at apply time), the Namespace, and
/// Helm hooks (what `privatize uninstall` does itself).
fn objects(yaml: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for document in serde_yaml_ng::Deserializer::from_str(yaml) {
        let mut value = Value::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap().to_string();
        if kind == "MutatingWebhookConfiguration" {
            registered_as_install_does(&mut value);
        }
        let hook = value["metadata"]["annotations"]["helm.sh/hook"].is_string();
        if kind == "Namespace" || kind == "Secret" || hook {
            continue;
        }
        // The template's text differs (the chart renders it from values): compare what it says.
        if kind == "ConfigMap" && value["metadata"]["name"] == "privatize-copy-job-template" {
            let text = value["data"]["pod-template.yaml"].as_str().unwrap();
            value["data"]["pod-template.yaml"] = serde_yaml_ng::from_str(text).unwrap();
        }
        // Both roll serve when the ConfigMaps change; the hashes differ with the template's text.
        let annotations = &mut value["spec"]["template"]["metadata"]["annotations"];
        if annotations["privatize.io/config-hash"].is_string() {
            annotations["privatize.io/config-hash"] = "<hash>".into();
        }
        for hook in value["webhooks"].as_array_mut().into_iter().flatten() {
            hook["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
        }
        let key = format!(
            "{kind}/{}/{}",
            value["metadata"]["namespace"].as_str().unwrap_or(""),
            value["metadata"]["name"].as_str().unwrap()
        );
        out.insert(key, value);
    }
    out
}

/// The chart's webhook configuration without what makes it a post-install
/// hook Helm adopts later (a first install registers it once serve is ready).
fn registered_as_install_does(value: &mut Value) {
    let metadata = value["metadata"].as_object_mut().unwrap();
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.retain(|k, _| !k.starts_with("helm.sh/") && !k.starts_with("meta.helm.sh/"));
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    if let Some(labels) = metadata.get_mut("labels") {
        if labels["app.kubernetes.io/managed-by"] == "Helm" {
            labels["app.kubernetes.io/managed-by"] = "privatize".into();
        }
    }
}

fn assert_same(chart: &str, install: &str) {
    let (chart, install) = (objects(chart), objects(install));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        install.keys().collect::<Vec<_>>(),
        "kinds and names differ"
    );
    for (key, expected) in &install {
        assert_eq!(
            &chart[key], expected,
            "{key} differs between the chart and install"
        );
    }
}

#[test]
fn chart_defaults_render_what_install_renders() {
    assert_same(
        &helm_template("privatize", &[]),
        &install_dry_run("privatize", &[]),
    );
}

#[test]
fn chart_values_mirror_install_flags() {
    let chart = helm_template(
        "team-mirror",
        &[
            "--set", "image.repository=registry.example/privatize", "--set", "image.tag=v9",
            "--set", "targetRegistry=123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror",
            "--set", "webhookUrl=https://10.0.0.5:9443",
            "--set", "serviceAccount.webhook.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/privatize-pull",
            "--set", "serviceAccount.copyJob.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/privatize-push",
            "--set", "serviceAccount.refresh.annotations.example\\.com/owner=platform",
            "--set", "sourceCredentialsSecret=dockerhub",
            "--set", "kmsKey=alias/ecr",
            "--set", "ecrCredentials.namespaces={team-a,team-b}",
            "--set", "excludeNamespaces={monitoring,batch-*}",
            "--set", "platforms=auto",
        ],
    );
    let install = install_dry_run(
        "team-mirror",
        &[
            "--image",
            "registry.example/privatize:v9",
            "--target-registry",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror",
            "--webhook-url",
            "https://10.0.0.5:9443",
            "--webhook-service-account-annotation",
            "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/privatize-pull",
            "--copy-job-service-account-annotation",
            "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/privatize-push",
            "--refresh-service-account-annotation",
            "example.com/owner=platform",
            "--source-credentials-secret",
            "dockerhub",
            "--kms-key",
            "alias/ecr",
            "--credential-namespaces",
            "team-a,team-b",
            "--exclude-namespaces",
            "monitoring,batch-*",
            "--platforms",
            "auto",
        ],
    );
    assert_same(&chart, &install);
    assert!(
        objects(&chart)["ClusterRole//privatize-webhook"]["rules"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]})),
        "platforms auto: serve may list and watch Nodes, on both sides"
    );
    assert!(
        objects(&chart).contains_key("RoleBinding/team-b/privatize-credentials"),
        "a RoleBinding per credential namespace"
    );
    // Each account its own identity, on both sides.
    let objects = objects(&chart);
    for (account, annotations) in [
        (
            "privatize-webhook",
            serde_json::json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/privatize-pull"}),
        ),
        (
            "privatize",
            serde_json::json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/privatize-push"}),
        ),
        (
            "privatize-refresh",
            serde_json::json!({"example.com/owner": "platform"}),
        ),
    ] {
        assert_eq!(
            objects[&format!("ServiceAccount/team-mirror/{account}")]["metadata"]["annotations"],
            annotations,
            "{account}"
        );
    }
}

#[test]
fn credential_namespaces_star_binds_the_secret_rights_cluster_wide_on_both_sides() {
    let chart = helm_template("privatize", &["--set", "ecrCredentials.namespaces={*}"]);
    let install = install_dry_run("privatize", &["--credential-namespaces", "*"]);
    assert_same(&chart, &install);
    let objects = objects(&chart);
    let binding = &objects["ClusterRoleBinding//privatize-credentials"];
    assert_eq!(
        binding["subjects"],
        serde_json::json!([
            {"kind": "ServiceAccount", "name": "privatize-webhook", "namespace": "privatize"},
            {"kind": "ServiceAccount", "name": "privatize-refresh", "namespace": "privatize"},
        ])
    );
    assert!(!objects
        .keys()
        .any(|k| k.starts_with("RoleBinding/") && k.ends_with("/privatize-credentials")));
}

#[test]
fn serve_keeps_the_certificate_the_chart_generates_until_it_is_due() {
    use base64::Engine as _;
    use privatize::tls::renewal::{plan, Plan};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let yaml = helm_template("privatize", &[]);
    let secret = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|v| v["kind"] == "Secret" && v["metadata"]["name"] == "privatize-tls")
        .expect("the chart's TLS Secret");
    let field = |key: &str| {
        let b64 = secret["data"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let issued = privatize::tls::Issued {
        ca_pem: field("ca.crt"),
        cert_pem: field("tls.crt"),
        key_pem: field("tls.key"),
    };
    let names = privatize::tls::service_sans("privatize", "privatize", &[]);
    let month = std::time::Duration::from_secs(30 * 86400);
    let now = std::time::SystemTime::now();
    // sprig's genCA/genSignedCert: readable, signed by its ca.crt, every Service name.
    let bundle = [issued.ca_pem.clone()];
    assert_eq!(
        plan(Ok(&issued), &bundle, &names, month, now),
        Plan::Keep { bundle: None }
    );
    let due = plan(Ok(&issued), &bundle, &names, 12 * month + month, now);
    assert!(matches!(due, Plan::Renew { .. }), "{due:?}");
}

#[test]
fn a_tls_secret_the_user_brings_is_never_renewed_nor_writable() {
    let defaults = objects(&helm_template("privatize", &[]));
    let brought = objects(&helm_template(
        "privatize",
        &["--set", "tls.existingSecret=my-tls"],
    ));
    let env = |objects: &BTreeMap<String, Value>| {
        objects["Deployment/privatize/privatize"]["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert!(env(&defaults).contains(&"PRIVATIZE_TLS_SECRET".to_string()));
    assert!(!env(&brought).contains(&"PRIVATIZE_TLS_SECRET".to_string()));
    let rules = |objects: &BTreeMap<String, Value>, key: &str| objects[key]["rules"].to_string();
    for key in [
        "Role/privatize/privatize-webhook",
        "ClusterRole//privatize-webhook",
    ] {
        let (with, without) = (rules(&defaults, key), rules(&brought, key));
        assert!(
            with.contains("privatize-tls") || with.contains("mutatingwebhookconfigurations"),
            "{key}: {with}"
        );
        assert!(
            !without.contains("secrets") && !without.contains("mutatingwebhookconfigurations"),
            "{key}: {without}"
        );
    }
    let policy = |objects: &BTreeMap<String, Value>| {
        objects["ValidatingAdmissionPolicy//privatize-secrets"]["spec"]["validations"][0]
            ["expression"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(policy(&defaults).contains("request.name == 'privatize-tls'"));
    assert!(!policy(&brought).contains("request.name"));
}

#[test]
fn the_chart_refuses_one_set_of_annotations_for_every_account() {
    let refused = Command::new(helm())
        .args([
            "template",
            "privatize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/privatize"),
        ])
        .args([
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/privatize",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(
            "serviceAccount.annotations is gone: it put one identity on all three accounts; set \
             serviceAccount.webhook.annotations (serve: pull), serviceAccount.copyJob.annotations \
             (copy Jobs: push) and serviceAccount.refresh.annotations (no AWS identity)"
        ),
        "{err}"
    );
}

#[test]
fn chart_copy_job_template_ca_bundle_and_replicas_mirror_install_flags() {
    let dir = std::env::temp_dir().join(format!("privatize-chart-{}", common::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = "hostNetwork: true\nnodeSelector: {example.com/egress: \"true\"}\n\
                    containers: [{name: sync-image, resources: {limits: {memory: 1Gi}}}]\n";
    std::fs::write(dir.join("template.yaml"), template).unwrap();
    let indented: String = template.lines().map(|l| format!("  {l}\n")).collect();
    std::fs::write(
        dir.join("values.yaml"),
        format!("copyJobPodTemplate:\n{indented}"),
    )
    .unwrap();
    let ca = privatize::tls::issue(&["x".into()]).unwrap().ca_pem;
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let chart = helm_template(
        "privatize",
        &[
            "-f",
            &path("values.yaml"),
            "--set-file",
            &format!("registryCaBundle={}", path("ca.pem")),
            "--set",
            "replicaCount=0",
            "--set",
            "webhookUrl=https://127.0.0.1:9",
        ],
    );
    let install = install_dry_run(
        "privatize",
        &[
            "--copy-job-pod-template",
            &path("template.yaml"),
            "--ca-file",
            &path("ca.pem"),
            "--replicas",
            "0",
            "--webhook-url",
            "https://127.0.0.1:9",
        ],
    );
    assert_same(&chart, &install);
    let hash = &objects(&chart)["Deployment/privatize/privatize"]["spec"]["template"]["metadata"]
        ["annotations"]["privatize.io/config-hash"];
    assert_eq!(
        hash, "<hash>",
        "the chart rolls serve on a new template too"
    );
    // No server pod and no URL: refused, as install refuses it.
    let refused = Command::new(helm())
        .args([
            "template",
            "privatize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/charts/privatize"),
        ])
        .args(["--set", "replicaCount=0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("replicaCount 0 needs webhookUrl"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let objects = objects(&install);
    assert_eq!(
        objects["ConfigMap/privatize/privatize-ca"]["data"]["ca.pem"],
        ca
    );
    assert!(
        !objects
            .keys()
            .any(|k| k.starts_with("PodDisruptionBudget/")),
        "no budget without replicas"
    );
    let pod = &objects["Deployment/privatize/privatize"]["spec"]["template"]["spec"];
    assert_eq!(
        objects["Deployment/privatize/privatize"]["spec"]["replicas"],
        0
    );
    let mounts = &pod["containers"][0]["volumeMounts"];
    assert_eq!(
        mounts,
        &serde_json::json!([
            {"name": "tls", "mountPath": "/etc/privatize/tls", "readOnly": true},
            {"name": "copy-job-template", "mountPath": "/etc/privatize/copy-job-template", "readOnly": true},
            {"name": "privatize-ca", "mountPath": "/etc/privatize/ca", "readOnly": true}
        ])
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The env values and the projected token volume of a pod spec's first container.
fn web_identity(pod: &Value) -> (BTreeMap<String, String>, Option<Value>) {
    let env: BTreeMap<String, String> = pod["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    let projected = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["projected"].is_object())
        .cloned();
    if let Some(volume) = &projected {
        let mount = pod["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume["name"])
            .expect("the token volume is mounted");
        let token_file = &env["AWS_WEB_IDENTITY_TOKEN_FILE"];
        assert!(
            token_file.starts_with(mount["mountPath"].as_str().unwrap()),
            "{token_file} not under the mount"
        );
    }
    (env, projected)
}

#[test]
fn web_identity_outside_aws_gives_serve_and_the_copy_jobs_each_their_own_role_and_the_cronjob_none()
{
    let chart = objects(&helm_template(
        "privatize",
        &[
            "--set",
            "aws.webIdentity.enabled=true",
            "--set",
            "aws.webIdentity.roleArn=arn:aws:iam::123456789012:role/privatize-pull",
            "--set",
            "aws.region=eu-west-1",
            "--set",
            "aws.existingSecret=serve-keys",
            "--set",
            "copyJob.aws.webIdentity.enabled=true",
            "--set",
            "copyJob.aws.webIdentity.roleArn=arn:aws:iam::123456789012:role/privatize-push",
            "--set",
            "copyJobPodTemplate.hostNetwork=true",
        ],
    ));
    // serve: its own (pull) role and its token.
    let serve = &chart["Deployment/privatize/privatize"]["spec"]["template"]["spec"];
    let (env, projected) = web_identity(serve);
    assert_eq!(
        env.get("AWS_ROLE_ARN").map(String::as_str),
        Some("arn:aws:iam::123456789012:role/privatize-pull")
    );
    assert_eq!(env.get("AWS_REGION").map(String::as_str), Some("eu-west-1"));
    assert_eq!(
        projected.unwrap()["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "sts.amazonaws.com"
    );

    // The CronJob calls no AWS API: no AWS variable, no token, no keys.
    let cron = &chart["CronJob/privatize/privatize-refresh-secrets"]["spec"]["jobTemplate"]["spec"]
        ["template"]["spec"];
    let container = &cron["containers"][0];
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["name"].as_str().unwrap().starts_with("AWS_")),
        "{container}"
    );
    assert!(
        container["envFrom"].is_null() && cron["volumes"].is_null(),
        "{cron}"
    );

    // The copy Jobs: their own (push) role, through the pod template serve
    // merges into every Job, which serve accepts as it does at start.
    let text = chart["ConfigMap/privatize/privatize-copy-job-template"]["data"]
        ["pod-template.yaml"]
        .clone();
    let template: Value = text;
    let parsed =
        privatize::copy_job::template::parse(&serde_yaml_ng::to_string(&template).unwrap())
            .expect("serve accepts the rendered template");
    let settings = privatize::serve::jobs::JobSettings {
        pod_template: parsed,
        ..Default::default()
    };
    let image = privatize::image::ImageRef::parse("example.invalid/sample:1").unwrap();
    let job = privatize::serve::jobs::copy_job(&settings, &image, &image, &[], "");
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(privatize::copy_job::template::clash(&pod), None);
    let pod = serde_json::to_value(pod).unwrap();
    assert_eq!(pod["hostNetwork"], true, "the user's template is kept");
    let (env, projected) = web_identity(&pod);
    assert_eq!(
        env.get("AWS_ROLE_ARN").map(String::as_str),
        Some("arn:aws:iam::123456789012:role/privatize-push")
    );
    assert!(projected.is_some(), "{pod}");
}

#[test]
fn static_push_keys_for_the_copy_jobs_join_the_users_copy_container() {
    let chart = objects(&helm_template(
        "privatize",
        &[
            "--set",
            "copyJob.aws.existingSecret=push-keys",
            "--set-json",
            r#"copyJobPodTemplate={"containers":[{"name":"sync-image","env":[{"name":"HTTPS_PROXY","value":"http://proxy:3128"}]}]}"#,
        ],
    ));
    let template =
        &chart["ConfigMap/privatize/privatize-copy-job-template"]["data"]["pod-template.yaml"];
    assert_eq!(
        template["containers"],
        serde_json::json!([{
            "name": "sync-image",
            "env": [
                {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "push-keys", "key": "AWS_ACCESS_KEY_ID"}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "push-keys", "key": "AWS_SECRET_ACCESS_KEY"}}},
                {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "push-keys", "key": "AWS_SESSION_TOKEN", "optional": true}}}
            ]
        }])
    );
    // serve reads the template: it rolls out when the keys' Secret name changes.
    let hash = &chart["Deployment/privatize/privatize"]["spec"]["template"]["metadata"]
        ["annotations"]["privatize.io/config-hash"];
    assert_eq!(hash, "<hash>");
    // And serve's own keys stay serve's: aws.existingSecret alone renders no template.
    let serve_only = objects(&helm_template(
        "privatize",
        &["--set", "aws.existingSecret=serve-keys"],
    ));
    assert!(!serve_only.contains_key("ConfigMap/privatize/privatize-copy-job-template"));
}

#[test]
fn helm_lint_passes() {
    run(Command::new(helm()).args([
        "lint",
        "--strict",
        concat!(env!("CARGO_MANIFEST_DIR"), "/charts/privatize"),
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_accepts_the_charts_objects() {
    let ns = common::kube::TestNamespace::new("helm").await;
    let yaml = helm_template(
        &ns.name,
        &[
            "--set",
            "aws.webIdentity.enabled=true",
            "--set",
            "aws.webIdentity.roleArn=arn:aws:iam::1:role/x",
            "--set",
            "copyJobPodTemplate.hostNetwork=true",
            "--set",
            "copyJob.aws.webIdentity.enabled=true",
            "--set",
            "copyJob.aws.webIdentity.roleArn=arn:aws:iam::1:role/push",
            "--set",
            "serviceAccount.webhook.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/pull",
            "--set",
            "registryCaBundle=PEM",
        ],
    );
    let applied = common::kube::server_side_dry_run(&ns.client, &yaml).await;
    assert!(
        applied
            .iter()
            .any(|a| a == "MutatingWebhookConfiguration/privatize"),
        "{applied:?}"
    );
    for object in [
        "Secret/privatize-tls",
        "ConfigMap/privatize-ca",
        "ConfigMap/privatize-copy-job-template",
    ] {
        assert!(applied.iter().any(|a| a == object), "{object}: {applied:?}");
    }
}

#[test]
fn helm_uninstall_deletes_the_webhook_configuration_first_and_releases_gated_pods_through_a_hook() {
    let yaml = helm_template("privatize", &[]);
    let hooks: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| v["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete")
        .collect();
    let job = hooks
        .iter()
        .find(|h| h["kind"] == "Job")
        .expect("a pre-delete Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["args"],
        serde_json::json!([
            "uninstall",
            "--webhook-only",
            "--namespace",
            "privatize",
            "--target-registry",
            ""
        ])
    );
    let role = hooks
        .iter()
        .find(|h| h["kind"] == "ClusterRole")
        .expect("its ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["privatize"], "verbs": ["get", "delete"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]}
        ])
    );
    assert!(
        helm_template("privatize", &["--set", "uninstallHook.enabled=false"])
            .find("pre-delete")
            .is_none()
    );
}

/// A first install registers the webhooks once serve is ready (a post-install
/// hook, which `helm install --wait` runs after the Deployment is ready), with
/// Helm's ownership metadata so that the first upgrade adopts the object in
/// place; an upgrade renders it as an ordinary object; without the uninstall
/// hook (which deletes it) it is ordinary from the start.
#[test]
fn the_chart_registers_its_webhooks_once_serve_is_ready() {
    let config = |extra: &[&str]| -> Value {
        let yaml = helm_template("privatize", extra);
        let config = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .find(|v| v["kind"] == "MutatingWebhookConfiguration")
            .expect("a MutatingWebhookConfiguration");
        config
    };
    let install = config(&[]);
    let annotations = &install["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "post-install", "{install}");
    assert_eq!(annotations["meta.helm.sh/release-name"], "privatize");
    assert_eq!(annotations["meta.helm.sh/release-namespace"], "privatize");
    assert_eq!(
        install["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    for extra in [
        &["--is-upgrade"][..],
        &["--set", "uninstallHook.enabled=false"],
    ] {
        let ordinary = config(extra);
        assert!(
            ordinary["metadata"]["annotations"]["helm.sh/hook"].is_null(),
            "{extra:?}: {ordinary}"
        );
        assert_eq!(
            ordinary["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "privatize"
        );
    }
    // The same webhooks either way (each render generates its own CA).
    let webhooks = |mut config: Value| {
        for hook in config["webhooks"].as_array_mut().unwrap() {
            hook["clientConfig"]
                .as_object_mut()
                .unwrap()
                .remove("caBundle");
        }
        config["webhooks"].take()
    };
    assert_eq!(webhooks(install), webhooks(config(&["--is-upgrade"])));
}
