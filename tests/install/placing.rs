//! `install --copy-job-pod-template`, `--ca-file` and `--replicas`: the
//! ConfigMaps, serve's mounts and env, no budget and no wait without
//! replicas; a bad template refused before anything is applied; a later
//! install without them removes what they made.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use serde_json::json;

use crate::common::kube::{client, privatize};
use crate::common::{stderr, unique};
use crate::support::{install, uninstall, InstallNamespace, TARGET, URL};
use crate::SERIAL;

const TEMPLATE: &str =
    "# egress nodes only\nhostNetwork: true\nnodeSelector: {example.com/egress: \"true\"}\n";

fn files() -> (std::path::PathBuf, std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("privatize-install-placing-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("template.yaml"), TEMPLATE).unwrap();
    let ca = privatize::tls::issue(&["x".into()]).unwrap().ca_pem;
    std::fs::write(dir.join("ca.pem"), &ca).unwrap();
    (dir.join("template.yaml"), dir.join("ca.pem"), ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_stores_the_template_and_cas_in_config_maps_serve_mounts_and_waits_for_no_replica()
{
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = client().await;
    let installed = InstallNamespace::new();
    let ns = installed.0.clone();
    let (template, ca_file, ca) = files();

    // Waiting (no --no-wait) on an apiserver with no Deployment controller:
    // with 0 replicas there is nothing to wait for.
    let started = Instant::now();
    let out = privatize()
        .args([
            "install",
            "--namespace",
            &ns,
            "--image",
            "registry.example/privatize:test",
        ])
        .args([
            "--webhook-url",
            URL,
            "--target-registry",
            TARGET,
            "--wait-timeout",
            "30",
        ])
        .arg("--copy-job-pod-template")
        .arg(&template)
        .arg("--ca-file")
        .arg(&ca_file)
        .args(["--replicas", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        stderr(&out).contains(&format!(
            "{:<55} rolled out (0 replicas wanted)",
            format!("Deployment/privatize in {ns}")
        )),
        "{}",
        stderr(&out)
    );
    assert!(Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get_opt("privatize")
        .await
        .unwrap()
        .is_some());

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let data = |name: &'static str| {
        let config_maps = config_maps.clone();
        async move { config_maps.get(name).await.unwrap().data.unwrap() }
    };
    assert_eq!(
        data("privatize-copy-job-template").await,
        BTreeMap::from([("pod-template.yaml".to_string(), TEMPLATE.to_string())])
    );
    assert_eq!(
        data("privatize-ca").await,
        BTreeMap::from([("ca.pem".to_string(), ca.clone())])
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("privatize")
        .await
        .unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let pod = serde_json::to_value(spec.template.spec.unwrap()).unwrap();
    let env: BTreeMap<&str, &str> = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    assert_eq!(
        env["PRIVATIZE_COPY_JOB_POD_TEMPLATE"],
        "/etc/privatize/copy-job-template/pod-template.yaml"
    );
    assert_eq!(env["PRIVATIZE_CA_FILE"], "/etc/privatize/ca/ca.pem");
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([
            {"name": "tls", "mountPath": "/etc/privatize/tls", "readOnly": true},
            {"name": "copy-job-template", "mountPath": "/etc/privatize/copy-job-template", "readOnly": true},
            {"name": "privatize-ca", "mountPath": "/etc/privatize/ca", "readOnly": true}
        ])
    );
    let volumes: Vec<(&str, &str)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["configMap"]["name"].as_str()?)))
        .collect();
    assert_eq!(
        volumes,
        [
            ("copy-job-template", "privatize-copy-job-template"),
            ("privatize-ca", "privatize-ca")
        ]
    );
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    assert!(
        budgets.get_opt("privatize").await.unwrap().is_none(),
        "no budget for no replica"
    );

    // A changed template rolls serve out (it reads the file at start).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = |d: Deployment| {
        d.spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap_or_default()
            .get("privatize.io/config-hash")
            .cloned()
    };
    let first = hash(deployments.get("privatize").await.unwrap()).expect("a config hash");
    assert_eq!(first.len(), 16, "{first}");
    std::fs::write(&template, format!("{TEMPLATE}priorityClassName: copies\n")).unwrap();
    install(
        &ns,
        &[
            "--replicas",
            "0",
            "--copy-job-pod-template",
            template.to_str().unwrap(),
            "--ca-file",
            ca_file.to_str().unwrap(),
        ],
    );
    let second = hash(deployments.get("privatize").await.unwrap()).expect("a config hash");
    assert_ne!(
        first, second,
        "a new template must change serve's pod template"
    );

    // Without them again: the ConfigMaps and the hash go, the budget comes back.
    install(&ns, &[]);
    assert_eq!(hash(deployments.get("privatize").await.unwrap()), None);
    for name in ["privatize-copy-job-template", "privatize-ca"] {
        assert!(config_maps.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    assert!(budgets.get_opt("privatize").await.unwrap().is_some());
    // One replica: a budget of minAvailable 1 would block every drain.
    install(&ns, &["--replicas", "1"]);
    assert!(budgets.get_opt("privatize").await.unwrap().is_none());
    uninstall(&ns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_refuses_a_bad_template_a_bad_ca_file_or_no_server_and_no_url_before_touching_the_cluster(
) {
    let _serial = SERIAL.lock().await;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let installed = InstallNamespace::new();
    let (template, _, _) = files();
    std::fs::write(&template, "containers: [{image: busybox}]\n").unwrap();
    let not_a_ca = template.with_file_name("not-a-ca.pem");
    std::fs::write(&not_a_ca, "hello\n").unwrap();
    for (flag, file, error) in [
        (
            "--copy-job-pod-template",
            &template,
            format!(
                "invalid copy-Job pod template {}: containers[0].image: privatize's own (it is COPY_JOB_IMAGE)",
                template.display()
            ),
        ),
        (
            "--ca-file",
            &not_a_ca,
            format!(
                "reading CA file {}: no PEM certificate in it",
                not_a_ca.display()
            ),
        ),
    ] {
        let out = privatize()
            .args(["install", "--namespace", &installed.0, "--webhook-url", URL])
            .args(["--target-registry", TARGET, flag])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr(&out), format!("error: {error}\n"));
    }
    let out = privatize()
        .args(["install", "--namespace", &installed.0, "--replicas", "0"])
        .args(["--target-registry", TARGET])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --replicas 0 needs --webhook-url: with no server pod the webhooks would call a \
         Service with no endpoints, and the Secret webhooks (failurePolicy Fail) would refuse \
         every managed Secret\n"
    );
    assert!(Api::<Namespace>::all(client().await)
        .get_opt(&installed.0)
        .await
        .unwrap()
        .is_none());
}
