//! The fences of DESIGN §11, on an apiserver of the test's own: what someone
//! holding a token of privatize's ServiceAccounts can do after `install`.
//! RBAC gives serve Secret rights only in `--credential-namespaces`, and the
//! ValidatingAdmissionPolicies narrow its writes to what its code does:
//! managed dockerconfigjson Secrets; on pods, only its own gate and labels
//! taken off and images set back to the recorded originals.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::cluster::PrivateCluster;
use crate::common::kube::client_from;
use crate::common::stderr;

const NS: &str = "privatize";
/// Enabled for ECR credentials and in `--credential-namespaces`.
const TEAM: &str = "team";
/// Enabled for ECR credentials, not bound.
const OTHER: &str = "other";
const IMAGE: &str = "127.0.0.1:15000/privatize/privatize:test";
const TARGET: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror";
const ORIGINAL: &str = "docker.io/library/busybox:1.36";
const SECRETS_DENIED: &str =
    "privatize's accounts may only write managed kubernetes.io/dockerconfigjson Secrets";

fn secret(name: &str, kind: &str, labels: serde_json::Value) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kubernetes.io/service-account.name": "default"}},
        "type": kind,
        "data": if kind == "kubernetes.io/dockerconfigjson" {
            json!({".dockerconfigjson": "eyJhdXRocyI6e319"})
        } else {
            json!({})
        },
    }))
    .unwrap()
}

/// The error text of a refused call (panics when it was not refused).
fn refused<T: std::fmt::Debug>(what: &str, result: kube::Result<T>) -> String {
    match result {
        Err(err) => err.to_string(),
        Ok(done) => panic!("{what} was allowed: {done:?}"),
    }
}

fn status_code<T>(result: &kube::Result<T>) -> Option<u16> {
    match result {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// A pod as serve leaves it gated in kube-system: image under the target,
/// the original recorded, gate and label set.
fn gated_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"privatize.io/gated": "true", "app": "victim"},
            "annotations": {"privatize.io/original-images": format!(r#"{{"c":"{ORIGINAL}"}}"#)},
        },
        "spec": {
            "schedulingGates": [{"name": "privatize.io/mirror"}],
            "containers": [{"name": "c", "image": format!("{TARGET}/docker.io/library/busybox:1.36")}],
        },
    }))
    .unwrap()
}

async fn patch_pod(api: &Api<Pod>, name: &str, patch: serde_json::Value) -> kube::Result<Pod> {
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_of_privatize_does_only_what_privatize_does() {
    let cluster = PrivateCluster::start().await;
    let admin = cluster.client.clone();
    for name in [TEAM, OTHER] {
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {
            "name": name, "labels": {"privatize.io/ecr-credentials": "enabled"}
        }}))
        .unwrap();
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    let privatize = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_privatize"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    privatize(&[
        "install",
        "--namespace",
        NS,
        "--image",
        IMAGE,
        "--target-registry",
        TARGET,
        "--credential-namespaces",
        TEAM,
        "--no-wait",
    ]);
    let as_account = |account: &'static str| {
        let cluster = &cluster;
        async move { client_from(&cluster.service_account_kubeconfig(NS, account).await).await }
    };
    let serve: Client = as_account("privatize-webhook").await;
    let refresh: Client = as_account("privatize-refresh").await;
    let copy: Client = as_account("privatize").await;

    // serve renewing its certificate: its own webhooks' caBundle, as renew.rs patches it.
    let configs: Api<MutatingWebhookConfiguration> = Api::all(serve.clone());
    let installed = configs
        .get("privatize")
        .await
        .expect("serve reads its webhooks");
    let bundle = installed.webhooks.as_ref().unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap();
    let bundle = String::from_utf8(bundle.0).unwrap();
    assert!(
        privatize::serve::renew::patch_ca_bundle(&serve, &installed, &bundle)
            .await
            .expect("serve patches its webhooks' caBundle")
    );
    let others = configs.list(&Default::default()).await;
    assert_eq!(
        status_code(&others),
        Some(403),
        "serve lists no webhook configurations"
    );

    // No serve runs here: without the webhooks, the apiserver alone judges.
    privatize(&["uninstall", "--namespace", NS, "--webhook-only"]);

    // Pods: wait until the pod policy is in force (an annotation change is
    // harmless while it is not yet), then try what a thief would.
    let system_pods: Api<Pod> = Api::namespaced(admin.clone(), "kube-system");
    for name in ["probe", "victim"] {
        system_pods
            .create(&PostParams::default(), &gated_pod(name))
            .await
            .unwrap();
    }
    let as_serve: Api<Pod> = Api::namespaced(serve.clone(), "kube-system");
    let start = Instant::now();
    let annotated = loop {
        let probe = patch_pod(
            &as_serve,
            "probe",
            json!({"metadata": {"annotations": {"probe": start.elapsed().as_millis().to_string()}}}),
        )
        .await;
        if probe.is_err() {
            break refused("an annotation change", probe);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the pod policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        annotated.contains("privatize-webhook may not change a pod's annotations"),
        "{annotated}"
    );
    let evil = patch_pod(
        &as_serve,
        "victim",
        json!({"spec": {"containers": [{"name": "c", "image": "attacker.example/evil:1"}]}}),
    )
    .await;
    let text = refused("an image of the thief's", evil);
    assert!(
        text.contains(
            "privatize-webhook may only set a pod's images back to the originals recorded on it"
        ),
        "{text}"
    );
    // Appended (the API lets a pod gain tolerations, never change one).
    let has_tolerations = system_pods
        .get("victim")
        .await
        .unwrap()
        .spec
        .unwrap()
        .tolerations
        .is_some();
    let toleration = json!({"operator": "Exists"});
    let add: json_patch::Patch = serde_json::from_value(if has_tolerations {
        json!([{"op": "add", "path": "/spec/tolerations/-", "value": toleration}])
    } else {
        json!([{"op": "add", "path": "/spec/tolerations", "value": [toleration]}])
    })
    .unwrap();
    let tolerated = as_serve
        .patch("victim", &PatchParams::default(), &Patch::Json::<()>(add))
        .await;
    let text = refused("a toleration", tolerated);
    assert!(
        text.contains("may not change a pod's deadline or tolerations"),
        "{text}"
    );
    let labelled = patch_pod(
        &as_serve,
        "victim",
        json!({"metadata": {"labels": {"app": "other"}}}),
    )
    .await;
    let text = refused("a label change", labelled);
    assert!(text.contains("may only remove its own labels"), "{text}");
    // What serve does: back to the original, gate and label off.
    let revert: json_patch::Patch = serde_json::from_value(json!([
        {"op": "remove", "path": "/metadata/labels/privatize.io~1gated"},
        {"op": "remove", "path": "/spec/schedulingGates"},
        {"op": "replace", "path": "/spec/containers/0/image", "value": ORIGINAL},
    ]))
    .unwrap();
    let reverted = as_serve
        .patch(
            "victim",
            &PatchParams::default(),
            &Patch::Json::<()>(revert),
        )
        .await
        .expect("a revert as serve makes it");
    assert_eq!(
        reverted.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref(),
        Some(ORIGINAL)
    );
    assert!(reverted
        .spec
        .unwrap()
        .scheduling_gates
        .unwrap_or_default()
        .is_empty());
    // Other accounts may not touch pods at all.
    for (who, client) in [("privatize-refresh", &refresh), ("privatize", &copy)] {
        let result = patch_pod(
            &Api::namespaced(client.clone(), "kube-system"),
            "probe",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
        assert_eq!(status_code(&result), Some(403), "{who}: {result:?}");
    }

    // Secrets: only managed dockerconfigjson ones, only where bound.
    let team: Api<Secret> = Api::namespaced(serve.clone(), TEAM);
    let managed = json!({"privatize.io/ecr-credentials": "managed"});
    team.create(
        &PostParams::default(),
        &secret("pull", "kubernetes.io/dockerconfigjson", managed.clone()),
    )
    .await
    .expect("a managed pull Secret, as serve writes it");
    for (name, kind, labels) in [
        // A token for the namespace's default account.
        (
            "token",
            "kubernetes.io/service-account-token",
            managed.clone(),
        ),
        ("plain", "kubernetes.io/dockerconfigjson", json!({})),
        ("opaque", "Opaque", managed.clone()),
    ] {
        let result = team
            .create(&PostParams::default(), &secret(name, kind, labels))
            .await;
        let text = refused(&format!("Secret {name} ({kind})"), result);
        assert!(text.contains(SECRETS_DENIED), "{name}: {text}");
    }
    // Taking over a tenant's Secret by labelling it managed.
    Api::<Secret>::namespaced(admin.clone(), TEAM)
        .create(
            &PostParams::default(),
            &secret("theirs", "kubernetes.io/dockerconfigjson", json!({})),
        )
        .await
        .unwrap();
    let takeover = team
        .patch(
            "theirs",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"privatize.io/ecr-credentials": "managed"}}}),
            ),
        )
        .await;
    let text = refused("labelling a tenant's Secret managed", takeover);
    assert!(text.contains(SECRETS_DENIED), "{text}");
    // The CronJob's account likewise.
    let result = Api::<Secret>::namespaced(refresh.clone(), TEAM)
        .create(
            &PostParams::default(),
            &secret("token2", "kubernetes.io/service-account-token", managed),
        )
        .await;
    assert!(refused("the CronJob's token Secret", result).contains(SECRETS_DENIED));
    // serve's own TLS Secret, which it renews: read and replaced, nothing more.
    let own: Api<Secret> = Api::namespaced(serve.clone(), NS);
    let tls = own
        .get("privatize-tls")
        .await
        .expect("serve reads its TLS Secret");
    own.replace("privatize-tls", &PostParams::default(), &tls)
        .await
        .expect("serve replaces its TLS Secret, as a renewal does");
    let other = own
        .create(
            &PostParams::default(),
            &secret("privatize-tls-2", "kubernetes.io/tls", json!({})),
        )
        .await;
    assert_eq!(status_code(&other), Some(403), "{other:?}");
    // Where not bound, and for the copy Jobs, no Secret at all.
    for (who, client, namespace) in [
        ("privatize-webhook", &serve, OTHER),
        ("privatize-webhook", &serve, "kube-system"),
        ("privatize-refresh", &refresh, OTHER),
        ("privatize", &copy, TEAM),
    ] {
        let result = Api::<Secret>::namespaced(client.clone(), namespace)
            .list(&Default::default())
            .await;
        assert_eq!(
            status_code(&result),
            Some(403),
            "{who} listing Secrets in {namespace}"
        );
    }
}
