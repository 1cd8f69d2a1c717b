//! Upgrades: over a previous version's objects, waiting for the new
//! generation, and rotating the CA without an outage.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::ResourceExt;

use crate::common::kube::{client, privatize};
use crate::common::stderr;
use crate::support::*;
use crate::SERIAL;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_over_a_previous_version_updates_objects_in_place() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let old: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "privatize", "labels": {"app.kubernetes.io/managed-by": "privatize"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "privatize", "app.kubernetes.io/component": "webhook"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "privatize", "app.kubernetes.io/component": "webhook"}},
                "spec": {"containers": [{"name": "privatize", "image": "blackbirdcloud/privatize:0.0.1"}]}
            }
        }
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let created = deployments
        .create(
            &PostParams {
                field_manager: Some("helm".into()),
                ..Default::default()
            },
            &old,
        )
        .await
        .unwrap();

    // The previous version's RBAC: a ClusterRole giving the copy Jobs'
    // account pod and Event rights, and the server's Role under its old name.
    let managed = serde_json::json!({"app.kubernetes.io/managed-by": "privatize"});
    let retired = [
        (
            "ClusterRole",
            serde_json::json!({"metadata": {"name": "privatize-copy-job", "labels": managed},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}]}),
        ),
        (
            "ClusterRoleBinding",
            serde_json::json!({"metadata": {"name": "privatize-copy-job", "labels": managed},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "privatize-copy-job"},
                "subjects": [{"kind": "ServiceAccount", "name": "privatize", "namespace": ns}]}),
        ),
        (
            "Role",
            serde_json::json!({"metadata": {"name": "privatize-webhook-jobs", "labels": managed},
                "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}]}),
        ),
        (
            "RoleBinding",
            serde_json::json!({"metadata": {"name": "privatize-webhook-jobs", "labels": managed},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "privatize-webhook-jobs"},
                "subjects": [{"kind": "ServiceAccount", "name": "privatize-webhook", "namespace": ns}]}),
        ),
    ];
    for (kind, object) in &retired {
        create_rbac(&client, &ns, kind, object.clone()).await;
    }

    let out = install(&ns, &[]);
    for line in [
        "ClusterRoleBinding/privatize-copy-job".to_string(),
        "ClusterRole/privatize-copy-job".to_string(),
        format!("RoleBinding/privatize-webhook-jobs in {ns}"),
        format!("Role/privatize-webhook-jobs in {ns}"),
    ] {
        assert!(
            stderr(&out)
                .lines()
                .any(|l| l.starts_with(&line) && l.ends_with(" deleted (no longer used)")),
            "{line} not retired:\n{}",
            stderr(&out)
        );
    }
    assert_eq!(
        everything(&client, &ns).await.keys().collect::<Vec<_>>(),
        installed_objects(&ns).iter().collect::<Vec<_>>(),
        "the retired RBAC is gone"
    );
    assert_rbac_as_specified(&client, &ns).await;
    let updated = deployments.get("privatize").await.unwrap();
    assert_eq!(
        updated.uid(),
        created.uid(),
        "updated in place, not recreated"
    );
    let spec = updated.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(
        spec.template.spec.unwrap().containers[0].image.as_deref(),
        Some("registry.example/privatize:test")
    );
    uninstall(&ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_waits_for_the_new_generation_not_for_the_old_available_pods() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    install(&ns, &[]);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    set_status(
        &deployments,
        serde_json::json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;

    // The upgrade: a new image is generation 2, while (maxUnavailable: 0) both
    // old pods stay available.
    let mut upgrade = Running(
        privatize()
            .args([
                "install",
                "--namespace",
                &ns,
                "--webhook-url",
                URL,
                "--image",
                "registry.example/privatize:v2",
                "--target-registry",
                TARGET,
                "--wait-timeout",
                "60",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while deployments
        .get("privatize")
        .await
        .unwrap()
        .metadata
        .generation
        != Some(2)
    {
        assert!(upgrade.still_running(), "install ended before the upgrade");
        assert!(std::time::Instant::now() < deadline, "no generation 2");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        upgrade.still_running(),
        "install returned while only the old generation was available"
    );

    // The controller saw generation 2 and surged one new pod: not done yet.
    set_status(
        &deployments,
        serde_json::json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        upgrade.still_running(),
        "install returned with one of two replicas updated"
    );

    // Both replicas run generation 2 and are available: install finishes.
    set_status(
        &deployments,
        serde_json::json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    let (status, err) = upgrade.finish(std::time::Duration::from_secs(20));
    assert!(status.success(), "{err}");
    // The webhook configuration is applied after the rollout, as the last step.
    let tail: Vec<&str> = err.lines().rev().take(2).collect();
    assert!(
        tail[1].starts_with(&format!("Deployment/privatize in {ns}"))
            && tail[1].ends_with("rolled out (2/2 replicas updated and available)"),
        "{err}"
    );
    assert!(
        tail[0].starts_with("MutatingWebhookConfiguration/privatize "),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_keeps_the_old_ca_trusted_until_the_rotation_settles() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let ca = || async {
        let data = secrets.get("privatize-tls").await.unwrap().data.unwrap();
        certificates(&data["ca.crt"].0)
    };
    let bundles = || async {
        let config = configs.get("privatize").await.unwrap();
        config
            .webhooks
            .unwrap()
            .iter()
            .map(|h| certificates(&h.client_config.ca_bundle.as_ref().unwrap().0))
            .collect::<Vec<_>>()
    };
    install(&ns, &[]);
    let old = ca().await;
    assert_eq!(bundles().await, vec![old.clone(); 3]);

    // Another webhook host means other SANs: a new CA and certificate.
    let moved = ["--webhook-url", "https://localhost:9"];
    let out = install(&ns, &moved);
    let new = ca().await;
    assert_ne!(new, old);
    assert_eq!(
        bundles().await,
        vec![[new.clone(), old.clone()].concat(); 3],
        "pods still serving the old certificate stay trusted"
    );
    assert!(
        stderr(&out)
            .contains("certificate issued (the webhooks trust 2 CAs until the rotation settles)"),
        "{}",
        stderr(&out)
    );

    // Inside the grace period a run keeps both and changes nothing.
    let before = everything(&client, &ns).await;
    install(&ns, &moved);
    assert_eq!(everything(&client, &ns).await, before);
}

/// Each ServiceAccount's `eks.amazonaws.com/role-arn`, read back.
async fn roles(client: &kube::Client, ns: &str) -> Vec<(String, Option<String>)> {
    let accounts =
        Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for account in ["privatize-webhook", "privatize", "privatize-refresh"] {
        let role = accounts
            .get(account)
            .await
            .unwrap()
            .annotations()
            .get("eks.amazonaws.com/role-arn")
            .cloned();
        out.push((account.to_string(), role));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_from_one_role_for_all_refuses_the_old_flag_and_takes_the_push_role_off_serve() {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    let push = "arn:aws:iam::123456789012:role/privatize-push";
    let pull = "arn:aws:iam::123456789012:role/privatize-pull";
    let role = |arn: &str| format!("eks.amazonaws.com/role-arn={arn}");
    // What the previous version's --service-account-annotation applied: the
    // push role on all three accounts, by the same field manager.
    install(
        &ns,
        &[
            "--webhook-service-account-annotation",
            &role(push),
            "--copy-job-service-account-annotation",
            &role(push),
            "--refresh-service-account-annotation",
            &role(push),
        ],
    );
    let before = roles(&client, &ns).await;
    assert!(before.iter().all(|(_, r)| r.as_deref() == Some(push)));

    // The same command line as before: refused in one line, nothing changed.
    let out = privatize()
        .args([
            "install",
            "--no-wait",
            "--namespace",
            &ns,
            "--webhook-url",
            URL,
        ])
        .args([
            "--target-registry",
            TARGET,
            "--image",
            "registry.example/privatize:test",
        ])
        .args(["--service-account-annotation", &role(push)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --service-account-annotation is gone: it put one identity on all three accounts; use \
         --webhook-service-account-annotation (serve: pull), --copy-job-service-account-annotation \
         (copy Jobs: push) and --refresh-service-account-annotation (no AWS identity); \
         `privatize install --iam-policies` prints each role's policy\n"
    );
    assert_eq!(roles(&client, &ns).await, before);

    // The new flags: serve pulls, the copy Jobs push, the CronJob's role is gone.
    install(
        &ns,
        &[
            "--webhook-service-account-annotation",
            &role(pull),
            "--copy-job-service-account-annotation",
            &role(push),
        ],
    );
    assert_eq!(
        roles(&client, &ns).await,
        [
            ("privatize-webhook".to_string(), Some(pull.to_string())),
            ("privatize".to_string(), Some(push.to_string())),
            ("privatize-refresh".to_string(), None),
        ]
    );
}
