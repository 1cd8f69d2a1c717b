//! Unit tests of the copy-Job pod template: validation errors name the
//! field, and the merge follows the module's rule.

use super::*;
use serde_json::json;

const PLACING_YAML: &str = include_str!("../../tests/data/pod_template/placing.yaml");
const PLACING_JSON: &str = include_str!("../../tests/data/pod_template/placing.json");

/// A copy Job's pod spec as privatize builds it (the parts a merge touches).
fn copy_pod() -> PodSpec {
    serde_json::from_value(json!({
        "restartPolicy": "Never",
        "serviceAccountName": "privatize",
        "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "containers": [{
            "name": "sync-image",
            "image": "example.com/privatize:1",
            "args": ["sync-image", "nginx", "--target", "t/nginx"],
            "env": [
                {"name": "AWS_REGION", "value": "us-east-1"},
                {"name": "PRIVATIZE_CA_FILE", "value": "/etc/privatize/ca/ca.pem"}
            ],
            "volumeMounts": [{"name": "privatize-ca", "mountPath": "/etc/privatize/ca", "readOnly": true}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
            "securityContext": {"readOnlyRootFilesystem": true}
        }],
        "volumes": [{"name": "privatize-ca", "configMap": {"name": "privatize-ca"}}]
    }))
    .unwrap()
}

fn merged(template: &str) -> Value {
    let mut pod = copy_pod();
    parse(template).unwrap().apply(&mut pod);
    serde_json::to_value(pod).unwrap()
}

fn error(template: &str) -> String {
    format!("{:#}", parse(template).unwrap_err())
}

#[test]
fn yaml_maps_merge_lists_append_scalars_replace_and_resources_merge_by_key() {
    let pod = merged(PLACING_YAML);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "copy-jobs");
    assert_eq!(
        pod["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "example.com/egress": "true"}),
        "maps merge"
    );
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["tolerations"][0]["value"], "egress");
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["amd64"])
    );
    let volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["privatize-ca", "aws-token"], "lists append");
    let c = &pod["containers"][0];
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}),
        "the template's requests and limits win key by key"
    );
    let env: Vec<(&str, &Value)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let names: Vec<&str> = env.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["PRIVATIZE_CA_FILE", "AWS_ACCESS_KEY_ID", "AWS_REGION"],
        "appended; the template's AWS_REGION replaces privatize's"
    );
    assert_eq!(env[2].1["value"], "eu-west-1");
    assert_eq!(
        env[1].1["valueFrom"]["secretKeyRef"]["name"], "aws-keys",
        "a secret stays a reference"
    );
    assert_eq!(c["envFrom"], json!([{"secretRef": {"name": "aws-extra"}}]));
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/etc/privatize/ca", "/var/run/secrets/aws"]);
    // privatize's own fields are untouched.
    assert_eq!(c["args"][0], "sync-image");
    assert_eq!(c["image"], "example.com/privatize:1");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "privatize");
    assert_eq!(pod["restartPolicy"], "Never");
}

#[test]
fn json_is_read_as_yaml_is() {
    let pod = merged(PLACING_JSON);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["containers"][0]["resources"]["limits"]["memory"], "1Gi");
}

#[test]
fn an_empty_template_changes_nothing() {
    for text in ["{}", "containers: []", "nodeSelector:\n"] {
        let template = parse(text).unwrap();
        assert!(template.is_empty(), "{text}");
        let mut pod = copy_pod();
        template.apply(&mut pod);
        assert_eq!(pod, copy_pod(), "{text}");
    }
}

#[test]
fn each_owned_pod_field_is_refused_by_name() {
    for (field, value) in [
        ("securityContext", json!({"runAsUser": 0})),
        ("automountServiceAccountToken", json!(true)),
        ("serviceAccountName", json!("default")),
        ("serviceAccount", json!("default")),
        ("restartPolicy", json!("OnFailure")),
        ("initContainers", json!([{"name": "x", "image": "busybox"}])),
        (
            "ephemeralContainers",
            json!([{"name": "x", "image": "busybox"}]),
        ),
        ("activeDeadlineSeconds", json!(5)),
        ("hostPID", json!(true)),
        ("hostIPC", json!(true)),
        ("shareProcessNamespace", json!(true)),
    ] {
        let text = json!({ field: value }).to_string();
        let err = error(&text);
        assert!(
            err.starts_with(&format!("{field}: privatize's own (")),
            "{field}: {err}"
        );
    }
    assert_eq!(
        error("automountServiceAccountToken: true"),
        "automountServiceAccountToken: privatize's own (a copy gets no Kubernetes API token)"
    );
}

#[test]
fn each_owned_container_field_is_refused_by_name() {
    for field in [
        "command",
        "args",
        "image",
        "securityContext",
        "workingDir",
        "stdin",
    ] {
        let value = match field {
            "command" | "args" => json!(["sh"]),
            "securityContext" => json!({"privileged": true}),
            "stdin" => json!(true),
            _ => json!("x"),
        };
        let text = json!({"containers": [{ field: value }]}).to_string();
        let err = error(&text);
        assert!(
            err.starts_with(&format!("containers[0].{field}: privatize's own (")),
            "{field}: {err}"
        );
    }
    assert_eq!(
        error("containers: [{name: sync-image, command: [sh, -c, 'cat /secret']}]"),
        "containers[0].command: privatize's own (the copy command)"
    );
}

#[test]
fn only_the_copy_container_may_be_named_and_only_once() {
    assert_eq!(
        error("containers: [{name: sidecar}]"),
        "containers[0].name: \"sidecar\" is not the copy container; leave the name out or write sync-image"
    );
    assert_eq!(
        error("containers: [{name: sync-image}, {name: sync-image}]"),
        "containers: at most one entry, the copy container (sync-image)"
    );
    assert_eq!(
        error("containers: [{ports: [{containerPort: 80}]}]"),
        "containers[0].ports: not taken from the template (the copy container takes resources, env, envFrom, volumeMounts, imagePullPolicy)"
    );
}

#[test]
fn unknown_fields_are_named_with_their_path() {
    assert_eq!(
        error("nodeselector: {a: b}"),
        "nodeselector: unknown field (check its spelling and case)"
    );
    assert_eq!(
        error("tolerations: [{key: a, efect: NoSchedule}]"),
        "tolerations[0].efect: unknown field (check its spelling and case)"
    );
    assert_eq!(
        error("containers: [{resources: {limit: {memory: 1Gi}}}]"),
        "containers[0].resources.limit: unknown field (check its spelling and case)"
    );
    assert_eq!(
        error("containers: [{env: [{name: A, valu: b}]}]"),
        "containers[0].env[0].valu: unknown field (check its spelling and case)"
    );
}

#[test]
fn a_wrongly_typed_field_is_named() {
    let err = error("hostNetwork: [true]\nnodeSelector: {a: b}");
    assert!(
        err.starts_with("hostNetwork: invalid type: sequence"),
        "{err}"
    );
    let err = error("containers: [{env: {A: b}}]");
    assert!(
        err.starts_with("containers[0].env: invalid type: map"),
        "{err}"
    );
    assert_eq!(
        error("- hostNetwork: true"),
        "not a mapping of pod-spec fields (nodeSelector, tolerations, ...)"
    );
    assert!(error("nodeSelector: {a: b").starts_with("neither YAML nor JSON: "));
}

#[test]
fn a_template_volume_clashing_with_privatizes_is_found() {
    let mut pod = copy_pod();
    parse("volumes: [{name: privatize-ca, emptyDir: {}}]")
        .unwrap()
        .apply(&mut pod);
    assert_eq!(
        clash(&pod).as_deref(),
        Some("volumes: privatize-ca is a volume privatize gives copy Jobs already; rename yours")
    );
    let mut pod = copy_pod();
    parse("volumes: [{name: x, emptyDir: {}}]\ncontainers: [{volumeMounts: [{name: x, mountPath: /etc/privatize/ca}]}]")
        .unwrap()
        .apply(&mut pod);
    assert_eq!(
        clash(&pod).as_deref(),
        Some("containers[0].volumeMounts: /etc/privatize/ca is a path privatize mounts already")
    );
    let mut pod = copy_pod();
    parse(PLACING_YAML).unwrap().apply(&mut pod);
    assert_eq!(clash(&pod), None);
}

#[test]
fn resources_merge_key_by_key_so_a_template_with_requests_keeps_the_memory_limit() {
    let pod = merged("containers: [{resources: {requests: {cpu: 200m}}}]");
    assert_eq!(
        pod["containers"][0]["resources"],
        json!({"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}})
    );
}

#[test]
fn pod_fields_outside_placement_and_credentials_are_refused() {
    for (field, value) in [
        ("schedulingGates", json!([{"name": "x"}])),
        ("hostUsers", json!(true)),
        ("nodeName", json!("n1")),
        (
            "hostAliases",
            json!([{"ip": "10.0.0.1", "hostnames": ["a"]}]),
        ),
    ] {
        let err = error(&json!({ field: value }).to_string());
        assert!(
            err.starts_with(&format!(
                "{field}: not taken from the template (a copy Job's pod takes nodeSelector, "
            )),
            "{field}: {err}"
        );
    }
}

#[test]
fn host_paths_and_api_tokens_cannot_reach_a_copy() {
    assert_eq!(
        error("volumes: [{name: h, hostPath: {path: /}}]"),
        "volumes[0].hostPath: not taken from the template (copy Jobs may mount configMap, secret, emptyDir, projected, downwardAPI, csi)"
    );
    let no_audience =
        "volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t}}]}}]";
    let api = "volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t, audience: 'https://kubernetes.default.svc'}}]}}]";
    for text in [no_audience, api] {
        assert_eq!(
            error(text),
            "volumes[0].projected.sources[0].serviceAccountToken.audience: needs an audience other than \
             the apiserver's (e.g. sts.amazonaws.com): a copy gets no Kubernetes API token",
            "{text}"
        );
    }
    assert!(parse("volumes: [{name: t, projected: {sources: [{serviceAccountToken: {path: t, audience: sts.amazonaws.com}}]}}]").is_ok());
}

#[test]
fn serves_own_settings_cannot_be_replaced_through_env() {
    for name in ["PRIVATIZE_PLAIN_HTTP", "PRIVATIZE_CA_FILE", "DOCKER_CONFIG"] {
        assert_eq!(
            error(&format!("containers: [{{env: [{{name: {name}, value: x}}]}}]")),
            format!("containers[0].env: {name} is privatize's own setting (give serve the flag or variable instead)")
        );
    }
}

#[test]
fn a_mount_must_name_a_template_volume() {
    assert_eq!(
        error("containers: [{volumeMounts: [{name: tokn, mountPath: /t}]}]"),
        "containers[0].volumeMounts: tokn names no volume of the template"
    );
}
