//! Pure: what a copy Job takes from `serve` (DESIGN §10, §11 "One identity per
//! job"): the AWS settings that carry no identity (region, endpoint URLs,
//! retries) and a non-ECR target's credentials. Never serve's AWS identity (role,
//! web-identity token, keys, profile, container credentials): a copy Job's is
//! its own ServiceAccount's, or what the copy-Job pod template gives it. In a
//! cluster the variables are copied from serve's own pod spec (references stay
//! references); outside one from the process environment, secrets excepted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod, Volume, VolumeMount};

/// AWS variables passed on: where and how to call AWS, never as whom.
const AWS_SETTINGS: [&str; 9] = [
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
];
/// Per-service endpoint URLs (`AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_STS`, ...).
const AWS_ENDPOINT_PREFIX: &str = "AWS_ENDPOINT_URL_";
/// A non-ECR target's credentials and kind: the Jobs push with what serve
/// reads with (a Secret reference or a mounted file, never a value written
/// into the Job), and serve never hands them to tenants.
const TARGET_SETTINGS: [&str; 4] = [
    "PRIVATIZE_DEST_CREDS",
    "PRIVATIZE_AUTHFILE",
    "DOCKER_CONFIG",
    "PRIVATIZE_TARGET_KIND",
];
/// Never copied from the process environment as plain values: they would be
/// written into every Job object. In a cluster its `secretKeyRef` is.
const SECRET_NAMES: [&str; 1] = ["PRIVATIZE_DEST_CREDS"];
/// Variables that name files: the volume holding each is passed on too.
const PATH_NAMES: [&str; 2] = ["PRIVATIZE_AUTHFILE", "DOCKER_CONFIG"];

/// Whether a Job gets `name` from serve.
fn passed(name: &str) -> bool {
    AWS_SETTINGS.contains(&name)
        || name.starts_with(AWS_ENDPOINT_PREFIX)
        || TARGET_SETTINGS.contains(&name)
}

/// Whether `name` is one of serve's own that a Job must not get: every other
/// `AWS_*` variable (the identity: role, token file, keys, profile, container
/// credentials, and anything the SDK may add).
fn withheld(name: &str) -> bool {
    name.starts_with("AWS_") && !passed(name)
}

/// What the Job gets (environment, and volumes with their mounts), and the
/// names of serve's variables it does not get, for the log.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassOn {
    pub env: Vec<EnvVar>,
    pub volumes: Vec<(Volume, VolumeMount)>,
    /// Sorted; names only, never values.
    pub withheld: Vec<String>,
}

/// From serve's own pod: the container's passed variables as written (secret
/// references stay references), and every volume that holds a file named by
/// them or by `extra_paths` (the docker config directory).
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
    let all = c.env.iter().flatten();
    let env: Vec<EnvVar> = all.clone().filter(|e| passed(&e.name)).cloned().collect();
    let mut withheld_names: Vec<String> = all
        .filter(|e| withheld(&e.name))
        .map(|e| e.name.clone())
        .collect();
    withheld_names.sort();
    withheld_names.dedup();
    let mut paths: Vec<String> = extra_paths.to_vec();
    for e in &env {
        if PATH_NAMES.contains(&e.name.as_str()) {
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
    PassOn {
        env,
        volumes: out,
        withheld: withheld_names,
    }
}

/// From the process environment (serve outside a cluster): passed variables
/// with their values, secrets left out (and named in `withheld`).
pub fn from_process(vars: impl IntoIterator<Item = (String, String)>) -> PassOn {
    let mut env = Vec::new();
    let mut withheld_names = Vec::new();
    for (name, value) in vars {
        if withheld(&name) || SECRET_NAMES.contains(&name.as_str()) {
            withheld_names.push(name);
        } else if passed(&name) {
            env.push(EnvVar {
                name,
                value: Some(value),
                ..Default::default()
            });
        }
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    withheld_names.sort();
    PassOn {
        env,
        volumes: Vec::new(),
        withheld: withheld_names,
    }
}

fn within(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || path.starts_with(&format!("{dir}/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// serve's pod with every kind of AWS identity at once (IRSA's variables
    /// and token volume, keys from a Secret, a profile, container credentials)
    /// next to the identity-free settings and a non-ECR target's credentials.
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
                        {"name": "AWS_ROLE_SESSION_NAME", "value": "serve"},
                        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "id"}}},
                        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "secret"}}},
                        {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "session"}}},
                        {"name": "AWS_PROFILE", "value": "mirror"},
                        {"name": "AWS_CONFIG_FILE", "value": "/etc/aws/config"},
                        {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/etc/aws/credentials"},
                        {"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials"},
                        {"name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token"},
                        {"name": "AWS_REGION", "value": "eu-west-1"},
                        {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"},
                        {"name": "AWS_ENDPOINT_URL", "value": "http://moto:5000"},
                        {"name": "AWS_ENDPOINT_URL_ECR", "value": "http://ecr.example"},
                        {"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"},
                        {"name": "AWS_USE_FIPS_ENDPOINT", "value": "true"},
                        {"name": "PRIVATIZE_DEST_CREDS", "valueFrom": {"secretKeyRef": {"name": "target", "key": "creds"}}},
                        {"name": "DOCKER_CONFIG", "value": "/etc/privatize/docker"},
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                    ],
                    "volumeMounts": [
                        {"name": "aws-token", "mountPath": "/var/run/secrets/aws"},
                        {"name": "aws-files", "mountPath": "/etc/aws"},
                        {"name": "eks-pod-identity-token", "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount"},
                        {"name": "docker", "mountPath": "/etc/privatize/docker"},
                        {"name": "tls", "mountPath": "/etc/privatize/tls"}
                    ]
                }],
                "volumes": [
                    {"name": "aws-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "sts.amazonaws.com", "path": "token"}}]}},
                    {"name": "aws-files", "secret": {"secretName": "aws-files"}},
                    {"name": "eks-pod-identity-token", "projected": {"sources": [{"serviceAccountToken": {"audience": "pods.eks.amazonaws.com", "path": "eks-pod-identity-token"}}]}},
                    {"name": "docker", "secret": {"secretName": "target-docker-config"}},
                    {"name": "tls", "secret": {"secretName": "privatize-tls"}}
                ]
            }
        }))
        .unwrap()
    }

    fn names(env: &[EnvVar]) -> Vec<&str> {
        env.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn a_job_gets_serves_region_and_endpoints_but_none_of_its_aws_identity() {
        let pass = from_pod(&own_pod(), "privatize", &[]);
        assert_eq!(
            names(&pass.env),
            [
                "AWS_REGION",
                "AWS_DEFAULT_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_ECR",
                "AWS_STS_REGIONAL_ENDPOINTS",
                "AWS_USE_FIPS_ENDPOINT",
                "PRIVATIZE_DEST_CREDS",
                "DOCKER_CONFIG",
            ]
        );
        assert_eq!(
            pass.withheld,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_CONFIG_FILE",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_PROFILE",
                "AWS_ROLE_ARN",
                "AWS_ROLE_SESSION_NAME",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
                "AWS_SHARED_CREDENTIALS_FILE",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
            ]
        );
        // No token, key file or profile volume: only the target's docker config.
        let volumes: Vec<&str> = pass.volumes.iter().map(|(v, _)| v.name.as_str()).collect();
        assert_eq!(volumes, ["docker"]);
        assert!(pass.volumes.iter().all(|(_, m)| m.read_only == Some(true)));
    }

    #[test]
    fn a_non_ecr_targets_credentials_stay_a_secret_reference() {
        let pass = from_pod(&own_pod(), "privatize", &[]);
        let creds = pass
            .env
            .iter()
            .find(|e| e.name == "PRIVATIZE_DEST_CREDS")
            .unwrap();
        assert!(creds.value.is_none());
        let reference = creds.value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(reference.map(|r| r.name.as_str()), Some("target"));
    }

    #[test]
    fn an_unknown_aws_variable_is_withheld_not_passed() {
        let pass = from_process([
            ("AWS_SOMETHING_NEW".to_string(), "x".to_string()),
            ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        ]);
        assert!(pass.env.is_empty());
        assert_eq!(
            pass.withheld,
            ["AWS_EC2_METADATA_DISABLED", "AWS_SOMETHING_NEW"]
        );
    }

    #[test]
    fn process_identity_and_secrets_are_withheld_and_never_printed() {
        let pass = from_process([
            ("AWS_REGION".to_string(), "eu-west-1".to_string()),
            (
                "AWS_ENDPOINT_URL".to_string(),
                "http://127.0.0.1:5000".to_string(),
            ),
            ("AWS_MAX_ATTEMPTS".to_string(), "1".to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIDEXAMPLE".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t".to_string()),
            (
                "AWS_ROLE_ARN".to_string(),
                "arn:aws:iam::1:role/p".to_string(),
            ),
            ("AWS_PROFILE".to_string(), "mirror".to_string()),
            ("PRIVATIZE_DEST_CREDS".to_string(), "u:hunter2".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("PRIVATIZE_TARGET_KIND".to_string(), "ecr".to_string()),
        ]);
        assert_eq!(
            names(&pass.env),
            [
                "AWS_ENDPOINT_URL",
                "AWS_MAX_ATTEMPTS",
                "AWS_REGION",
                "PRIVATIZE_TARGET_KIND"
            ]
        );
        assert_eq!(
            pass.withheld,
            [
                "AWS_ACCESS_KEY_ID",
                "AWS_PROFILE",
                "AWS_ROLE_ARN",
                "AWS_SECRET_ACCESS_KEY",
                "PRIVATIZE_DEST_CREDS"
            ]
        );
        let printed = format!("{pass:?}");
        for secret in ["s3cr3t", "AKIDEXAMPLE", "hunter2", "role/p"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
    }
}
