//! Pure: the copy-Job pod template (`--copy-job-pod-template`, DESIGN §10
//! "Placing copies"), a partial pod spec in YAML or JSON, read once and merged
//! into every copy Job's pod.
//!
//! Only placement and credential fields are taken (an allow-list: a copy must
//! never gain an API token, host access or a gate it cannot pass):
//! `ALLOWED_POD_FIELDS`, and volumes of the kinds in `ALLOWED_VOLUME_KINDS`
//! (a projected `serviceAccountToken` needs an audience other than the
//! apiserver's). Merge rule: maps merge, lists append, scalars replace. The
//! one entry `containers` may hold is the copy container (`sync-image`): its
//! `resources` are merged key by key into privatize's defaults, its
//! `imagePullPolicy` is taken, and its `env` (no `PRIVATIZE_*` or
//! `DOCKER_CONFIG`: those are serve's settings), `envFrom` and `volumeMounts`
//! (of template volumes) are appended. Fields privatize owns, fields not
//! taken, and fields no pod spec has are errors naming the field.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, PodSpec, ResourceRequirements, VolumeMount,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The name of the copy container in every copy Job.
pub const COPY_CONTAINER: &str = "sync-image";

/// Pod-spec fields privatize sets itself, with the reason the error gives.
const OWNED_POD_FIELDS: [(&str, &str); 11] = [
    (
        "securityContext",
        "copies run non-root with the RuntimeDefault seccomp profile",
    ),
    (
        "automountServiceAccountToken",
        "a copy gets no Kubernetes API token",
    ),
    ("serviceAccountName", "it is COPY_JOB_SERVICE_ACCOUNT_NAME"),
    ("serviceAccount", "it is COPY_JOB_SERVICE_ACCOUNT_NAME"),
    ("restartPolicy", "the Job's backoffLimit retries a copy"),
    ("initContainers", "a copy Job runs the copy container only"),
    (
        "ephemeralContainers",
        "a copy Job runs the copy container only",
    ),
    (
        "activeDeadlineSeconds",
        "it is PRIVATIZE_COPY_JOB_ACTIVE_DEADLINE",
    ),
    ("hostPID", "a copy sees no other process"),
    ("hostIPC", "a copy shares no IPC with the node"),
    ("shareProcessNamespace", "a copy sees no other process"),
];
/// Pod-spec fields taken from the template.
const ALLOWED_POD_FIELDS: [&str; 12] = [
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "imagePullSecrets",
    "hostNetwork",
    "dnsPolicy",
    "dnsConfig",
    "topologySpreadConstraints",
    "runtimeClassName",
    "schedulerName",
    "volumes",
];
/// Volume kinds taken: credentials and scratch space, never the host's files.
const ALLOWED_VOLUME_KINDS: [&str; 6] = [
    "configMap",
    "secret",
    "emptyDir",
    "projected",
    "downwardAPI",
    "csi",
];
/// Fields of the copy container privatize sets itself.
const OWNED_CONTAINER_FIELDS: [(&str, &str); 6] = [
    ("command", "the copy command"),
    ("args", "the copy command"),
    ("image", "it is COPY_JOB_IMAGE"),
    (
        "securityContext",
        "copies run non-root, read-only, with no capabilities",
    ),
    ("workingDir", "the copy command"),
    ("stdin", "a copy reads no input"),
];
/// Fields of the copy container taken from the template.
const TAKEN_CONTAINER_FIELDS: [&str; 6] = [
    "name",
    "resources",
    "env",
    "envFrom",
    "volumeMounts",
    "imagePullPolicy",
];

/// A validated template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodTemplate {
    /// Pod-spec fields, without `containers` (each known to deserialize).
    pod: Map<String, Value>,
    container: CopyContainer,
}

/// What the copy container takes from the template.
#[derive(Debug, Clone, Default, PartialEq)]
struct CopyContainer {
    resources: Option<ResourceRequirements>,
    image_pull_policy: Option<String>,
    env: Vec<EnvVar>,
    env_from: Vec<EnvFromSource>,
    volume_mounts: Vec<VolumeMount>,
}

/// Parses and validates a template (YAML, or JSON, which YAML reads too).
/// Errors name the field: `containers[0].command: privatize's own (the copy command)`.
pub fn parse(text: &str) -> Result<PodTemplate> {
    let value: Value = serde_yaml_ng::from_str(text).context("neither YAML nor JSON")?;
    let Value::Object(mut pod) = without_nulls(value) else {
        bail!("not a mapping of pod-spec fields (nodeSelector, tolerations, ...)");
    };
    for (field, why) in OWNED_POD_FIELDS {
        if pod.contains_key(field) {
            bail!("{field}: privatize's own ({why})");
        }
    }
    let container = match pod.remove("containers") {
        None => None,
        Some(Value::Array(mut list)) if list.len() <= 1 => list.pop(),
        Some(Value::Array(_)) => {
            bail!("containers: at most one entry, the copy container ({COPY_CONTAINER})")
        }
        Some(_) => bail!("containers: not a list"),
    };
    let mut spec = pod.clone();
    spec.insert("containers".into(), Value::Array(Vec::new()));
    let typed_spec = typed::<PodSpec>(&spec, "")?;
    if let Some(field) = pod
        .keys()
        .find(|k| !ALLOWED_POD_FIELDS.contains(&k.as_str()))
    {
        bail!(
            "{field}: not taken from the template (a copy Job's pod takes {})",
            ALLOWED_POD_FIELDS.join(", ")
        );
    }
    for (i, volume) in pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        check_volume(volume, &format!("volumes[{i}]"))?;
    }
    let container = match container {
        Some(c) => copy_container(c)?,
        None => CopyContainer::default(),
    };
    let volumes: Vec<&str> = typed_spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    if let Some(mount) = container
        .volume_mounts
        .iter()
        .find(|m| !volumes.contains(&m.name.as_str()))
    {
        bail!(
            "containers[0].volumeMounts: {} names no volume of the template",
            mount.name
        );
    }
    Ok(PodTemplate { pod, container })
}

/// A volume of an allowed kind; a projected service-account token only for
/// another audience than the apiserver (the default audience is an API token).
fn check_volume(volume: &Value, at: &str) -> Result<()> {
    let Some(fields) = volume.as_object() else {
        return Ok(());
    };
    if let Some(kind) = fields
        .keys()
        .find(|k| *k != "name" && !ALLOWED_VOLUME_KINDS.contains(&k.as_str()))
    {
        bail!(
            "{at}.{kind}: not taken from the template (copy Jobs may mount {})",
            ALLOWED_VOLUME_KINDS.join(", ")
        );
    }
    let sources = fields
        .get("projected")
        .and_then(|p| p.get("sources"))
        .and_then(Value::as_array);
    for (i, source) in sources.into_iter().flatten().enumerate() {
        let Some(token) = source.get("serviceAccountToken") else {
            continue;
        };
        let audience = token.get("audience").and_then(Value::as_str).unwrap_or("");
        if audience.is_empty() || audience.starts_with("https://kubernetes.default.svc") {
            bail!(
                "{at}.projected.sources[{i}].serviceAccountToken.audience: needs an audience \
                 other than the apiserver's (e.g. sts.amazonaws.com): a copy gets no Kubernetes API token"
            );
        }
    }
    Ok(())
}

fn copy_container(value: Value) -> Result<CopyContainer> {
    const AT: &str = "containers[0]";
    let Value::Object(mut fields) = value else {
        bail!("{AT}: not a mapping of container fields");
    };
    match fields.get("name") {
        None => {}
        Some(Value::String(name)) if name == COPY_CONTAINER => {}
        Some(other) => bail!(
            "{AT}.name: {other} is not the copy container; leave the name out or write {COPY_CONTAINER}"
        ),
    }
    for (field, why) in OWNED_CONTAINER_FIELDS {
        if fields.contains_key(field) {
            bail!("{AT}.{field}: privatize's own ({why})");
        }
    }
    fields.insert("name".into(), COPY_CONTAINER.into());
    let container: Container = typed(&fields, AT)?;
    if let Some(field) = fields
        .keys()
        .find(|k| !TAKEN_CONTAINER_FIELDS.contains(&k.as_str()))
    {
        bail!(
            "{AT}.{field}: not taken from the template (the copy container takes {})",
            TAKEN_CONTAINER_FIELDS[1..].join(", ")
        );
    }
    if let Some(env) = container
        .env
        .iter()
        .flatten()
        .find(|e| own_variable(&e.name))
    {
        bail!(
            "{AT}.env: {} is privatize's own setting (give serve the flag or variable instead)",
            env.name
        );
    }
    if container
        .resources
        .as_ref()
        .is_some_and(|r| r.claims.is_some())
    {
        bail!("{AT}.resources.claims: not taken from the template");
    }
    Ok(CopyContainer {
        resources: container.resources,
        image_pull_policy: container.image_pull_policy,
        env: container.env.unwrap_or_default(),
        env_from: container.env_from.unwrap_or_default(),
        volume_mounts: container.volume_mounts.unwrap_or_default(),
    })
}

/// Variables serve sets in every copy Job from its own settings.
fn own_variable(name: &str) -> bool {
    name.starts_with("PRIVATIZE_") || name == "DOCKER_CONFIG"
}

/// Deserializes `fields` as a `T`, naming the field that does not fit, and
/// the first field `T` does not know (k8s-openapi ignores unknown fields:
/// they are found by comparing the input with its typed round trip).
fn typed<T: DeserializeOwned + Serialize>(fields: &Map<String, Value>, at: &str) -> Result<T> {
    let whole = Value::Object(fields.clone());
    let parsed = match serde_json::from_value::<T>(whole.clone()) {
        Ok(parsed) => parsed,
        Err(err) => {
            // Which field: the first that fails on its own (with the required ones).
            let required: Map<String, Value> = fields
                .iter()
                .filter(|(k, _)| *k == "containers" || *k == "name")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let culprit = fields.iter().find(|(k, v)| {
                let mut alone = required.clone();
                alone.insert((*k).clone(), (*v).clone());
                serde_json::from_value::<T>(Value::Object(alone)).is_err()
            });
            match culprit {
                Some((field, _)) => bail!("{}: {err}", join(at, field)),
                None => bail!("{}: {err}", if at.is_empty() { "the template" } else { at }),
            }
        }
    };
    let round_trip = serde_json::to_value(&parsed).context("serialising the template")?;
    if let Some(path) = unknown_field(&whole, &round_trip, at) {
        bail!("{path}: unknown field (check its spelling and case)");
    }
    Ok(parsed)
}

/// The path of the first key of `input` that its typed round trip lost.
fn unknown_field(input: &Value, round_trip: &Value, at: &str) -> Option<String> {
    match (input, round_trip) {
        (Value::Object(given), Value::Object(kept)) => given.iter().find_map(|(k, v)| {
            let path = join(at, k);
            match kept.get(k) {
                None => Some(path),
                Some(w) => unknown_field(v, w, &path),
            }
        }),
        (Value::Array(given), Value::Array(kept)) => given
            .iter()
            .zip(kept)
            .enumerate()
            .find_map(|(i, (v, w))| unknown_field(v, w, &format!("{at}[{i}]"))),
        _ => None,
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

/// `key: null` (or an empty YAML value) means "not set".
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

impl PodTemplate {
    /// Merges the template into a copy Job's pod spec (see the module doc).
    pub fn apply(&self, spec: &mut PodSpec) {
        if let Some(copy) = spec
            .containers
            .iter_mut()
            .find(|c| c.name == COPY_CONTAINER)
        {
            let t = &self.container;
            if let Some(more) = &t.resources {
                let resources = copy.resources.get_or_insert_with(Default::default);
                for (mine, theirs) in [
                    (&mut resources.limits, &more.limits),
                    (&mut resources.requests, &more.requests),
                ] {
                    if let Some(theirs) = theirs {
                        mine.get_or_insert_with(Default::default)
                            .extend(theirs.clone());
                    }
                }
            }
            if t.image_pull_policy.is_some() {
                copy.image_pull_policy = t.image_pull_policy.clone();
            }
            if !t.env.is_empty() {
                let env = copy.env.get_or_insert_with(Vec::new);
                env.retain(|e| !t.env.iter().any(|n| n.name == e.name));
                env.extend(t.env.iter().cloned());
            }
            append(&mut copy.env_from, &t.env_from);
            append(&mut copy.volume_mounts, &t.volume_mounts);
        }
        if self.pod.is_empty() {
            return;
        }
        let mut value = serde_json::to_value(&*spec).expect("a PodSpec serialises");
        merge(&mut value, &Value::Object(self.pod.clone()));
        *spec = serde_json::from_value(value)
            .expect("two valid pod specs merged field by field are a valid pod spec");
    }

    /// Whether the template sets nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn append<T: Clone>(list: &mut Option<Vec<T>>, more: &[T]) {
    if !more.is_empty() {
        list.get_or_insert_with(Vec::new)
            .extend(more.iter().cloned());
    }
}

/// Maps merge, lists append, scalars replace.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                match base.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        base.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(base), Value::Array(over)) => base.extend(over.iter().cloned()),
        (slot, v) => *slot = v.clone(),
    }
}

/// A clash the merge made in a copy Job's pod: two volumes of one name, or
/// two mounts at one path (the apiserver would refuse every Job).
pub fn clash(spec: &PodSpec) -> Option<String> {
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    if let Some(name) = duplicate(&volumes) {
        return Some(format!(
            "volumes: {name} is a volume privatize gives copy Jobs already; rename yours"
        ));
    }
    for c in &spec.containers {
        let paths: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        if let Some(path) = duplicate(&paths) {
            return Some(format!(
                "containers[0].volumeMounts: {path} is a path privatize mounts already"
            ));
        }
    }
    None
}

fn duplicate<'a>(items: &[&'a str]) -> Option<&'a str> {
    items
        .iter()
        .enumerate()
        .find(|(i, a)| items[..*i].contains(a))
        .map(|(_, a)| *a)
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
