//! One identity per job (DESIGN §11): `install --iam-policies` prints the
//! three minimal policies; every AWS call serve and a copy Job make, recorded
//! on their way to moto, is one their printed policy allows; a copy Job that
//! serve creates gets serve's region and endpoints but none of its identity.

#[path = "install/aws_recorder.rs"]
mod aws_recorder;
mod common;

use std::collections::BTreeSet;
use std::process::Output;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use aws_recorder::AwsRecorder;
use common::kube::{put_ca_config_map, TestNamespace};
use common::serve::{Serve, ServeOptions};
use common::{assert_ok, mirrored_repository, prefix, stderr, stdout, testbed};

const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror";

/// `privatize install --iam-policies ARGS` with no cluster to reach and no
/// install settings from the environment.
fn iam_policies(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_privatize"));
    for key in ["ECR_REGISTRY", "PRIVATIZE_KMS_KEY", "PRIVATIZE_NAMESPACE"] {
        cmd.env_remove(key);
    }
    cmd.env("KUBECONFIG", "/nonexistent/kubeconfig")
        .args(["install", "--iam-policies"])
        .args(args)
        .output()
        .unwrap()
}

/// The printed policies for `target` (exit 0, nothing on stderr).
fn printed(target: &str) -> Value {
    let out = iam_policies(&["--target-registry", target]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// Every action of a printed policy.
fn allowed(policy: &Value) -> BTreeSet<String> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn iam_policies_are_printed_for_the_target_and_prefix_without_a_cluster() {
    let out = iam_policies(&[
        "--namespace",
        "mirror-system",
        "--target-registry",
        TARGET,
        "--kms-key",
        "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let mirror = "arn:aws:ecr:eu-west-1:123456789012:repository/mirror/*";
    let login = json!({"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"});
    let expected = json!({
        "target": TARGET,
        "webhook": {
            "namespace": "mirror-system",
            "serviceAccount": "privatize-webhook",
            "subject": "system:serviceaccount:mirror-system:privatize-webhook",
            "annotationFlag": "--webhook-service-account-annotation",
            "rights": "pull-only on the mirror: presence checks, and the logins serve writes into tenants' pull Secrets",
            "policy": {"Version": "2012-10-17", "Statement": [
                login,
                {"Sid": "PullMirror", "Effect": "Allow", "Action": [
                    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"
                ], "Resource": mirror}
            ]}
        },
        "copyJob": {
            "namespace": "mirror-system",
            "serviceAccount": "privatize",
            "subject": "system:serviceaccount:mirror-system:privatize",
            "annotationFlag": "--copy-job-service-account-annotation",
            "rights": "push and repository creation on the mirror: the copy Jobs",
            "policy": {"Version": "2012-10-17", "Statement": [
                login,
                {"Sid": "MirrorRepositories", "Effect": "Allow", "Action": [
                    "ecr:CreateRepository", "ecr:DescribeRepositories", "ecr:GetLifecyclePolicy",
                    "ecr:GetRepositoryPolicy", "ecr:ListTagsForResource",
                    "ecr:PutImageScanningConfiguration", "ecr:PutImageTagMutability",
                    "ecr:PutLifecyclePolicy", "ecr:SetRepositoryPolicy", "ecr:TagResource"
                ], "Resource": mirror},
                {"Sid": "PushMirror", "Effect": "Allow", "Action": [
                    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload",
                    "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload", "ecr:PutImage",
                    "ecr:UploadLayerPart"
                ], "Resource": mirror},
                {"Sid": "EncryptNewRepositories", "Effect": "Allow",
                 "Action": ["kms:CreateGrant", "kms:DescribeKey"],
                 "Resource": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                 "Condition": {"StringEquals": {"kms:ViaService": "ecr.eu-west-1.amazonaws.com"}}}
            ]}
        },
        "refresh": {
            "namespace": "mirror-system",
            "serviceAccount": "privatize-refresh",
            "subject": "system:serviceaccount:mirror-system:privatize-refresh",
            "annotationFlag": "--refresh-service-account-annotation",
            "rights": "none: refresh-secrets calls no AWS API; give this account no role",
            "policy": null
        }
    });
    let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(got, expected);

    // Without a prefix the mirror is every repository of the registry; no KMS.
    let whole = printed("123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    assert_eq!(
        whole["copyJob"]["policy"]["Statement"][2]["Resource"],
        "arn:aws:ecr:eu-west-1:123456789012:repository/*"
    );
    assert!(!allowed(&whole["copyJob"]["policy"]).contains("kms:CreateGrant"));
}

#[test]
fn iam_policies_refuse_a_target_that_is_not_ecr_in_one_line() {
    let out = iam_policies(&["--target-registry", "registry.example:5000/mirror"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --iam-policies needs an ECR target (<account>.dkr.ecr.<region>.amazonaws.com[/PREFIX]), \
         not registry.example:5000: other registries grant pull and push through their own credentials\n"
    );
    assert_eq!(stdout(&out), "");
    let out = iam_policies(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --iam-policies needs --target-registry (or ECR_REGISTRY): the policies name its account, region and prefix\n"
    );
}

const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Pull","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":["ecr:BatchGetImage"]}]}"#;
const LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"description":"expire untagged","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14},"action":{"type":"expire"}}]}"#;
const OTHER_LIFECYCLE: &str = r#"{"rules":[{"rulePriority":1,"description":"expire untagged","selection":{"tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":7},"action":{"type":"expire"}}]}"#;

#[test]
fn every_aws_call_a_copy_job_makes_is_allowed_by_the_printed_copy_job_policy() {
    let tb = testbed();
    let recorder = AwsRecorder::start();
    let (reference, _) = tb.image("tiny");
    let p = prefix("iam-copy");
    let name = mirrored_repository(&p, "test/tiny");
    // A new repository with every setting, then the same repository's drift
    // repaired: each ECR call ensure_repository can make.
    let mut create = tb.privatize();
    create
        .env("AWS_ENDPOINT_URL", recorder.endpoint())
        .env("ECR_REPOSITORY_POLICY_TEXT", POLICY)
        .env("PRIVATIZE_LIFECYCLE_POLICY_TEXT", LIFECYCLE)
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--repository-tag",
            "team=a",
        ])
        .args(["--to", &format!("{}/{p}", tb.target()), &reference]);
    assert_ok(&create.output().unwrap());
    let mut reconcile = tb.privatize();
    reconcile
        .env("AWS_ENDPOINT_URL", recorder.endpoint())
        .env("ECR_REPOSITORY_POLICY_TEXT", POLICY.replace("Pull", "Read"))
        .env("PRIVATIZE_LIFECYCLE_POLICY_TEXT", OTHER_LIFECYCLE)
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--reconcile-repositories",
        ])
        .args(["--scan-on-push", "false", "--tag-mutability", "IMMUTABLE"])
        .args(["--repository-tag", "team=b"])
        .args([
            "--target",
            &format!("{}/{name}:v2", tb.target()),
            &reference,
        ]);
    let out = reconcile.output().unwrap();
    assert_ok(&out);
    assert!(stderr(&out).contains("reconciled"), "{}", stderr(&out));

    let called = recorder.actions();
    for needed in [
        "ecr:GetAuthorizationToken",
        "ecr:DescribeRepositories",
        "ecr:CreateRepository",
        "ecr:SetRepositoryPolicy",
        "ecr:PutLifecyclePolicy",
        "ecr:PutImageScanningConfiguration",
        "ecr:PutImageTagMutability",
        "ecr:GetRepositoryPolicy",
        "ecr:GetLifecyclePolicy",
        "ecr:ListTagsForResource",
        "ecr:TagResource",
    ] {
        assert!(
            called.contains(needed),
            "{needed} not exercised: {called:?}"
        );
    }
    let policies = printed(TARGET);
    let may = allowed(&policies["copyJob"]["policy"]);
    let unallowed: Vec<&String> = called.difference(&may).collect();
    assert!(
        unallowed.is_empty(),
        "called but not allowed: {unallowed:?}"
    );
    // The const the policy is checked against in the unit tests says the same.
    let listed: BTreeSet<String> = privatize::install::iam::COPY_JOB_CALLS
        .iter()
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(called.is_subset(&listed), "{called:?} vs {listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_secrets_calls_no_aws_api() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let recorder = AwsRecorder::start();
    let ns = TestNamespace::new("iam-refresh").await;
    let out = testbed()
        .privatize()
        .env("AWS_ENDPOINT_URL", recorder.endpoint())
        .env("KUBECONFIG", common::kube::kubeconfig_path())
        .args([
            "refresh-secrets",
            "--namespace",
            &ns.name,
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(recorder.actions(), BTreeSet::new());
}

/// serve's own pod as EKS makes it for an account with an IRSA role, with
/// static keys, a profile and container credentials on top: every kind of
/// identity serve might have, next to the identity-free settings.
fn own_pod(name: &str, region: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": "privatize-webhook",
            "containers": [{
                "name": "privatize",
                "image": "127.0.0.1:15000/privatize/privatize:test",
                "env": [
                    {"name": "AWS_REGION", "value": region},
                    {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                    {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/privatize-pull"},
                    {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"},
                    {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "serve-keys", "key": "id"}}},
                    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "serve-keys", "key": "secret"}}},
                    {"name": "AWS_PROFILE", "value": "serve"},
                    {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"}
                ],
                "volumeMounts": [{"name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true}]
            }],
            "volumes": [{"name": "aws-iam-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}}]
        }
    }))
    .unwrap()
}

/// The pod `app` running `image` in `namespace`.
fn app_pod(namespace: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image}]}
    })
}

/// An AdmissionReview of creating `pod`.
fn pod_review(pod: &Value) -> Vec<u8> {
    let namespace = &pod["metadata"]["namespace"];
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("identity-{}", common::unique()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_job_gets_serves_region_but_none_of_its_identity_and_serve_only_pulls() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tb = testbed();
    let jobs = TestNamespace::new("identity-jobs").await;
    let apps = TestNamespace::new("identity-apps").await;
    let pem = std::fs::read_to_string(&tb.env["TARGET_CA_FILE"]).unwrap();
    put_ca_config_map(&jobs.client, &jobs.name, &pem).await;
    Api::<Pod>::namespaced(jobs.client.clone(), &jobs.name)
        .create(
            &PostParams::default(),
            &own_pod("privatize-0", &tb.env["AWS_REGION"]),
        )
        .await
        .unwrap();
    let recorder = AwsRecorder::start();
    let target = format!("{}/identity/{}", tb.target(), common::unique() % 1_000_000);
    let serve = tokio::task::spawn_blocking({
        let (jobs, endpoint, target) = (jobs.name.clone(), recorder.endpoint(), target.clone());
        move || {
            Serve::start_with(
                ServeOptions::default()
                    .env("POD_NAME", "privatize-0")
                    .env("POD_NAMESPACE", &jobs)
                    .env("COPY_JOB_NAMESPACE", &jobs)
                    .env("ECR_REGISTRY", target)
                    .env("AWS_ENDPOINT_URL", endpoint),
            )
        }
    })
    .await
    .unwrap();

    // The image is missing under this serve's prefix: gated, then one copy
    // Job once the pod exists (the apiserver's part: create it as patched).
    let (source, _) = tb.image("tiny");
    let mut app = app_pod(&apps.name, &source);
    let (status, body, _) = serve.post("/mutate/pods", pod_review(&app), false).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let review: Value = serde_json::from_slice(&body).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    json_patch::patch(&mut app, &patch).unwrap();
    Api::<Pod>::namespaced(apps.client.clone(), &apps.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(app).unwrap(),
        )
        .await
        .unwrap();
    let created = common::serve_gate::wait_for_copy_jobs(&jobs.client, &jobs.name, 1).await;
    assert_eq!(created.len(), 1, "{}", serve.log_text());
    let pod = created[0]
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = &pod.containers[0];
    let aws: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with("AWS_"))
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        aws,
        [
            ("AWS_REGION", Some(tb.env["AWS_REGION"].as_str())),
            ("AWS_STS_REGIONAL_ENDPOINTS", Some("regional")),
        ],
        "the Job's AWS settings"
    );
    assert!(
        !pod.volumes.iter().flatten().any(|v| v.projected.is_some()),
        "a token volume reached the Job: {:?}",
        pod.volumes
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("privatize"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let withheld = serve
        .logs()
        .into_iter()
        .find(|l| l.contains("copy Jobs do not get serve's AWS identity"))
        .unwrap_or_else(|| panic!("no withheld line:\n{}", serve.log_text()));
    for name in [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
    ] {
        assert!(withheld.contains(name), "{name}: {withheld}");
    }

    // serve's own AWS calls (its login for the presence check) are pull-only.
    let called = recorder.actions();
    assert!(called.contains("ecr:GetAuthorizationToken"), "{called:?}");
    let may = allowed(&printed(TARGET)["webhook"]["policy"]);
    let unallowed: Vec<&String> = called.difference(&may).collect();
    assert!(unallowed.is_empty(), "serve called {unallowed:?}");
    drop(serve);
}

#[test]
fn a_role_for_the_refresh_cronjob_is_rendered_with_a_warning_that_it_needs_none() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_privatize"))
        .env_remove("ECR_REGISTRY")
        .args(["install", "--dry-run", "--target-registry", TARGET])
        .args([
            "--refresh-service-account-annotation",
            "eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/privatize-push",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "warning: --refresh-service-account-annotation eks.amazonaws.com/role-arn: refresh-secrets \
         calls no AWS API, so the CronJob needs no role\n"
    );
    // Rendered as asked, on that account alone.
    let annotated: Vec<String> = stdout(&out)
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_yaml_ng::from_str::<Value>(d).unwrap())
        .filter(|o| o["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].is_string())
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(annotated, ["ServiceAccount/privatize-refresh"]);
}
