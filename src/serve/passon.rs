//! Pure: what a copy Job inherits from `serve` (DESIGN §10): its AWS wiring
//! (env, the projected web-identity token) and target credentials (the CA
//! files reach Jobs through the CA ConfigMap instead). In a cluster they are copied from serve's own
//! pod spec, secret references and volumes included; outside one (tests,
//! development) from the process environment, secrets excepted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod, Volume, VolumeMount};

/// Variables passed on by name (values or `valueFrom` references).
const PASSED_PREFIXES: [&str; 1] = ["AWS_"];
const PASSED_NAMES: [&str; 4] = [
    "PRIVATIZE_DEST_CREDS",
    "PRIVATIZE_AUTHFILE",
    "DOCKER_CONFIG",
    "PRIVATIZE_TARGET_KIND",
];
/// Never copied from the process environment as plain values: they would
/// be written into every Job object. In a cluster their `secretKeyRef`s are.
const SECRET_NAMES: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PRIVATIZE_DEST_CREDS",
];
/// Variables that name files: the volume holding each is passed on too.
const PATH_NAMES: [&str; 5] = [
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "PRIVATIZE_AUTHFILE",
];

fn passed(name: &str) -> bool {
    PASSED_PREFIXES.iter().any(|p| name.starts_with(p)) || PASSED_NAMES.contains(&name)
}

/// What the Job gets: environment, and volumes with their mounts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassOn {
    pub env: Vec<EnvVar>,
    pub volumes: Vec<(Volume, VolumeMount)>,
}

/// From serve's own pod: the container's passed variables as written (secret
/// references stay references), and every volume that holds a file named by
/// them or by `extra_paths` (CA files, the docker config directory).
pub fn from_pod(pod: &Pod, container: &str, extra_paths: &[String]) -> PassOn {
    let Some(spec) = pod.spec.as_ref() else {
        return PassOn::default();
    };
    let Some(c) = spec
        .containers
        .iter()
        .find(|c| c.name == container)
        .or(spec.containers.first())
    else {
        return PassOn::default();
    };
    let env: Vec<EnvVar> = c
        .env
        .iter()
        .flatten()
        .filter(|e| passed(&e.name))
        .cloned()
        .collect();
    let mut paths: Vec<String> = extra_paths.to_vec();
    for e in &env {
        if PATH_NAMES.contains(&e.name.as_str()) || e.name == "DOCKER_CONFIG" {
            paths.extend(e.value.clone());
        }
    }
    let volumes: BTreeMap<&str, &Volume> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut out = Vec::new();
    for mount in c.volume_mounts.iter().flatten() {
        let holds = paths.iter().any(|p| within(p, &mount.mount_path));
        if !holds
            || out
                .iter()
                .any(|(_, m): &(Volume, VolumeMount)| m.name == mount.name)
        {
            continue;
        }
        if let Some(volume) = volumes.get(mount.name.as_str()) {
            let mut mount = mount.clone();
            mount.read_only = Some(true);
            out.push(((*volume).clone(), mount));
        }
    }
    PassOn { env, volumes: out }
}

/// From the process environment (serve outside a cluster): passed variables
/// with their values, secrets left out. Returns the names left out too.
pub fn from_process(vars: impl IntoIterator<Item = (String, String)>) -> (PassOn, Vec<String>) {
    let mut env = Vec::new();
    let mut withheld = Vec::new();
    for (name, value) in vars {
        if !passed(&name) {
            continue;
        }
        if SECRET_NAMES.contains(&name.as_str()) {
            withheld.push(name);
            continue;
        }
        env.push(EnvVar {
            name,
            value: Some(value),
            ..Default::default()
        });
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    withheld.sort();
    (
        PassOn {
            env,
            volumes: Vec::new(),
        },
        withheld,
    )
}

fn within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || path.starts_with(&format!("{dir}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn own_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "privatize-abc", "namespace": "privatize"},
            "spec": {
                "containers": [{
                    "name": "privatize",
                    "image": "example.com/privatize:1",
                    "env": [
                        {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/p"},
                        {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/aws/token"},
                        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "secret"}}},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "volumeMounts": [
                        {"name": "aws-token", "mountPath": "/var/run/secrets/aws"},
                        {"name": "tls", "mountPath": "/etc/privatize/tls"},
                        {"name": "ca", "mountPath": "/etc/privatize/ca"}
                    ]
                }],
                "volumes": [
                    {"name": "aws-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}]}},
                    {"name": "tls", "secret": {"secretName": "privatize-tls"}},
                    {"name": "ca", "configMap": {"name": "privatize-ca"}}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_pods_aws_wiring_and_ca_volume_pass_on_but_not_its_tls_secret() {
        let pass = from_pod(
            &own_pod(),
            "privatize",
            &["/etc/privatize/ca/ca.pem".into()],
        );
        let names: Vec<&str> = pass.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_SECRET_ACCESS_KEY"
            ]
        );
        // The secret stays a reference.
        assert!(pass.env[2].value.is_none() && pass.env[2].value_from.is_some());
        let volumes: Vec<&str> = pass.volumes.iter().map(|(v, _)| v.name.as_str()).collect();
        assert_eq!(volumes, ["aws-token", "ca"]);
        assert!(pass.volumes.iter().all(|(_, m)| m.read_only == Some(true)));
    }

    #[test]
    fn process_secrets_are_withheld() {
        let (pass, withheld) = from_process([
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("PRIVATIZE_TARGET_KIND".to_string(), "ecr".to_string()),
        ]);
        let names: Vec<&str> = pass.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["AWS_REGION", "PRIVATIZE_TARGET_KIND"]);
        assert_eq!(withheld, ["AWS_SECRET_ACCESS_KEY"]);
        assert!(!format!("{pass:?}").contains("s3cr3t"));
    }
}
