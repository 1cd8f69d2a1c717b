//! Placing copies (DESIGN §10): the copy-Job pod template and the CA
//! ConfigMap, read back from the apiserver in a created Job; serve refuses to
//! start on a bad template or a CA ConfigMap that is missing or incomplete.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use super::common::kube::{put_ca_config_map, TestNamespace};
use super::common::serve_gate::{complete_job, run_job_command, GateServe};
use super::common::{self, stderr};
use super::{copy_jobs, is_released, pod, wait_for, SERIAL};

const TEMPLATE: &str = "\
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
nodeSelector: {example.com/egress: \"true\"}
tolerations: [{key: dedicated, operator: Equal, value: egress, effect: NoSchedule}]
imagePullSecrets: [{name: regcred}]
containers:
  - name: sync-image
    resources:
      requests: {cpu: 100m, memory: 128Mi}
      limits: {memory: 1Gi}
    env:
      - name: AWS_SESSION_TOKEN
        valueFrom: {secretKeyRef: {name: aws-keys, key: session-token, optional: true}}
";

fn write_template(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("privatize-template-{}.yaml", common::unique()));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_job_carries_the_pod_template_and_the_ca_config_map_but_keeps_privatizes_fields() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-placing").await;
    let template = write_template(TEMPLATE);
    let serve = GateServe::start(
        &ns,
        &["--copy-job-pod-template", template.to_str().unwrap()],
    )
    .await;
    // The testbed image is missing under this serve's prefix: one copy Job.
    let (source, _) = common::testbed().image("tiny");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(&PostParams::default(), &pod("placed", &source))
        .await
        .unwrap();
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1, "{}", serve.log());
    let job = &jobs[0];
    let spec =
        serde_json::to_value(job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).unwrap();

    // The template's fields, as the apiserver stored them.
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(spec["nodeSelector"], json!({"example.com/egress": "true"}));
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "egress", "effect": "NoSchedule"}])
    );
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
    let c = &spec["containers"][0];
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}})
    );
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"],
        json!({"name": "aws-keys", "key": "session-token", "optional": true})
    );

    // privatize's own fields, unchanged.
    assert_eq!(c["name"], "sync-image");
    assert_eq!(c["image"], "127.0.0.1:15000/privatize/privatize:test");
    assert_eq!(c["args"][0], "sync-image");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["restartPolicy"], "Never");

    // The CA: the ConfigMap as a volume, never serve's own host path.
    assert_eq!(
        env["PRIVATIZE_CA_FILE"]["value"], "/etc/privatize/ca/ca.pem",
        "{env:?}"
    );
    assert_eq!(
        spec["volumes"],
        json!([{"name": "privatize-ca", "configMap": {"name": "privatize-ca", "defaultMode": 420}}])
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "privatize-ca", "mountPath": "/etc/privatize/ca", "readOnly": true}])
    );

    // The Job's command, with the ConfigMap mounted as a kubelet would,
    // copies to the TLS target (whose CA only the ConfigMap holds).
    let out = run_job_command(job);
    assert!(out.status.success(), "{}", stderr(&out));
    complete_job(&ns.client, &ns.name, job, true).await;
    wait_for(&pods, "placed", "released", is_released).await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_on_a_template_setting_a_field_privatize_owns() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-badtemplate").await;
    let pem = std::fs::read_to_string(&common::testbed().env["TARGET_CA_FILE"]).unwrap();
    put_ca_config_map(&ns.client, &ns.name, &pem).await;
    for (text, error) in [
        (
            "containers: [{command: [sh]}]\n",
            "containers[0].command: privatize's own (the copy command)",
        ),
        (
            "automountServiceAccountToken: true\n",
            "automountServiceAccountToken: privatize's own (a copy gets no Kubernetes API token)",
        ),
        (
            "nodeselector: {a: b}\n",
            "nodeselector: unknown field (check its spelling and case)",
        ),
    ] {
        let path = write_template(text);
        let out = GateServe::run_to_exit(&ns, &["--copy-job-pod-template", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out).lines().last().unwrap_or_default(),
            format!(
                "error: invalid copy-Job pod template {}: {error}",
                path.display()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_when_the_ca_config_map_is_missing_or_lacks_its_ca() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-noca").await;
    let out = GateServe::run_to_exit(&ns, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().last().unwrap_or_default(),
        format!(
            "error: ConfigMap privatize-ca not found in {ns}: copy Jobs get serve's --ca-file certificates from it; \
             create it with `privatize install --ca-file FILE ...` (or `kubectl -n {ns} create configmap \
             privatize-ca --from-file=ca.pem=FILE`)",
            ns = ns.name
        )
    );

    // Another CA than serve's.
    let other = privatize::tls::issue(&["x".into()]).unwrap().ca_pem;
    put_ca_config_map(&ns.client, &ns.name, &other).await;
    let out = GateServe::run_to_exit(&ns, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().last().unwrap_or_default(),
        format!(
            "error: ConfigMap privatize-ca in {} lacks 1 certificate(s) of CA file {}: \
             copy Jobs would not trust them; update it with `privatize install --ca-file FILE ...` \
             naming every CA file serve is given",
            ns.name,
            common::testbed().env["TARGET_CA_FILE"]
        )
    );
    let stored = Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
        .get("privatize-ca")
        .await
        .unwrap();
    assert_eq!(
        stored.data.unwrap()["ca.pem"],
        other,
        "serve changes nothing"
    );
}
