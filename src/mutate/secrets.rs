//! Managed `kubernetes.io/dockerconfigjson` Secrets: whether an admitted one is
//! valid (the Secret webhook validates and returns no login, DESIGN §11),
//! whether one is due for a fresh login, and the patch that writes fresh ECR
//! logins into it (serve's credential writer applies it through the API),
//! every other registry's entry kept byte for byte. Pure: the tokens come in,
//! looked up by the I/O layer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::Secret;
use kube::core::admission::{AdmissionRequest, Operation};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::pointer;
use crate::ecr::{parse_ecr_host, Token};

/// Secret label opting in to managed ECR credentials.
pub const MANAGED_LABEL: (&str, &str) = ("privatize.io/ecr-credentials", "managed");
/// ecr-anywhere's Secret label, honoured so its users need not relabel.
pub const ECR_ANYWHERE_MANAGED_LABEL: (&str, &str) = ("ecr-anywhere.centml.ai/managed", "true");
/// Namespace label enabling managed ECR credentials.
pub const NAMESPACE_LABEL: (&str, &str) = ("privatize.io/ecr-credentials", "enabled");
/// ecr-anywhere's namespace label.
pub const ECR_ANYWHERE_NAMESPACE_LABEL: (&str, &str) =
    ("ecr-anywhere.centml.ai/namespace", "enabled");
/// Annotation: extra ECR registry hosts (comma-separated) the Secret gets logins for.
pub const REGISTRIES_ANNOTATION: &str = "privatize.io/registries";
/// Annotation: RFC 3339 time the injected logins expire (the earliest of them).
pub const EXPIRES_AT: &str = "privatize.io/expires-at";
/// Annotation: RFC 3339 time (milliseconds) of the last injection.
pub const REFRESHED_AT: &str = "privatize.io/refreshed-at";
/// Annotation set by `refresh-secrets` to make serve write a fresh login; never touched here.
pub const REFRESH_REQUESTED_AT: &str = "privatize.io/refresh-requested-at";
/// The only Secret type a managed Secret may have.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The data key holding the docker config.
pub const CONFIG_KEY: &str = ".dockerconfigjson";

/// An ECR registry host and the region its login token comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EcrRegistry {
    /// Lower-case host, the `auths` key written.
    pub host: String,
    pub region: String,
}

impl EcrRegistry {
    /// An ECR host (`<account>.dkr.ecr.<region>.amazonaws.com`, FIPS and dual-stack
    /// included) with the region it names; `None` for any other host.
    pub fn parse(host: &str) -> Option<Self> {
        parse_ecr_host(host).map(|ecr| Self {
            host: host.to_ascii_lowercase(),
            region: ecr.region,
        })
    }
}

/// What the decision needs besides the request.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `ECR_REGISTRY`: every managed Secret gets a login for it. Its region comes from
    /// the host, or from the AWS settings when the host is not an ECR host (a test
    /// registry with `PRIVATIZE_TARGET_KIND=ecr`). `None` without an ECR target.
    pub registry: Option<EcrRegistry>,
}

/// Why a managed Secret is refused; the message reaches the user through the apiserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do with a Secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not ours to change (the reason is for logs).
    Unchanged(&'static str),
    /// Fresh logins to write.
    Inject(Injection),
}

/// Slack before a login's expiry at which the writer renews it on its own,
/// even when no refresh was asked for (the CronJob asks 6 h ahead).
pub const RENEW_SLACK: std::time::Duration = std::time::Duration::from_secs(3600);

/// How far in the future a refresh request may lie and still count (clocks
/// of nodes differ a little). A later or unreadable time is no request: it
/// would make every write due again, a loop a tenant could start.
pub const REQUEST_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// When a refresh was asked for (`privatize.io/refresh-requested-at`), if at
/// a readable time no later than `now` + [`REQUEST_SKEW`].
fn requested(secret: &Secret, now: SystemTime) -> Option<SystemTime> {
    let annotations = secret.metadata.annotations.as_ref()?;
    parse_time(annotations.get(REFRESH_REQUESTED_AT)?).filter(|asked| *asked <= now + REQUEST_SKEW)
}

/// The patch writing fresh logins, and what it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Vec<PatchOperation>,
    /// Hosts whose `auths` entry was written.
    pub registries: Vec<String>,
    /// The earliest expiry of the tokens written (annotation `privatize.io/expires-at`).
    pub expires_at: SystemTime,
}

/// A new managed pull Secret `name` in `namespace`, its docker config
/// empty (`{"auths":{}}`): what `refresh-secrets --ensure` creates and serve
/// creates under `--require-pull-secret`.
pub fn new_pull_secret(namespace: &str, name: &str) -> Secret {
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_LABEL.0.to_string(),
                MANAGED_LABEL.1.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_string()),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            k8s_openapi::ByteString(br#"{"auths":{}}"#.to_vec()),
        )])),
        ..Default::default()
    }
}

/// The one-line RoleBinding a namespace's owner runs so that privatize
/// (installed in `install_namespace`) may write logins there.
pub fn grant_command(namespace: &str, install_namespace: &str) -> String {
    format!(
        "kubectl create rolebinding privatize-credentials -n {namespace} --clusterrole privatize-credentials --serviceaccount {install_namespace}:privatize-webhook --serviceaccount {install_namespace}:privatize-refresh"
    )
}

/// Whether a Secret's labels opt it in (either label scheme).
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    has_label(labels, MANAGED_LABEL) || has_label(labels, ECR_ANYWHERE_MANAGED_LABEL)
}

/// Whether a namespace's labels enable managed credentials (either label scheme).
pub fn namespace_enabled(labels: &BTreeMap<String, String>) -> bool {
    has_label(labels, NAMESPACE_LABEL) || has_label(labels, ECR_ANYWHERE_NAMESPACE_LABEL)
}

fn has_label(labels: &BTreeMap<String, String>, (key, value): (&str, &str)) -> bool {
    labels.get(key).is_some_and(|v| v == value)
}

/// RFC 3339 in UTC with milliseconds, as the annotations are written.
pub fn format_time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// Reads an annotation time (RFC 3339, UTC); `None` when it is not one.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text.trim()).ok()
}

/// Validates an admitted Secret (CREATE or UPDATE): the registries a managed
/// one gets logins for, `ECR_REGISTRY` first; empty when it is not ours. A
/// managed Secret of the wrong type, with an unreadable docker config, or
/// naming a registry that is not ECR's, is denied, saying why.
pub fn registries_needed(
    request: &AdmissionRequest<Secret>,
    settings: &Settings,
) -> Result<Vec<EcrRegistry>, Denial> {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(Vec::new());
    }
    let Some(secret) = request.object.as_ref() else {
        return Ok(Vec::new());
    };
    let what = describe(secret, request.namespace.as_deref(), &request.name);
    Ok(match managed(secret, &what, settings)? {
        None => Vec::new(),
        Some((registries, _)) => registries,
    })
}

/// The registries a Secret gets logins for; `None` when it is not managed.
pub fn secret_registries(
    secret: &Secret,
    settings: &Settings,
) -> Result<Option<Vec<EcrRegistry>>, Denial> {
    let what = describe(secret, None, "");
    Ok(managed(secret, &what, settings)?.map(|(registries, _)| registries))
}

/// Why a managed Secret is due for a fresh login now (`None`: its login is
/// current): never written, a refresh was requested after the last write, a
/// registry's entry is missing, or it expires within [`RENEW_SLACK`].
pub fn due(secret: &Secret, registries: &[EcrRegistry], now: SystemTime) -> Option<&'static str> {
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let time = |key: &str| annotations.get(key).and_then(|t| parse_time(t));
    let Some(refreshed) = time(REFRESHED_AT) else {
        return Some("never written");
    };
    if requested(secret, now).is_some_and(|asked| asked > refreshed) {
        return Some("refresh requested");
    }
    match time(EXPIRES_AT) {
        None => return Some("no expiry recorded"),
        Some(expires) if expires <= now + RENEW_SLACK => return Some("expiring"),
        Some(_) => {}
    }
    let config = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIG_KEY))
        .and_then(|bytes| DockerConfig::parse(&bytes.0).ok())
        .unwrap_or_default();
    let present = |host: &str| config.auths.iter().any(|(key, _)| auth_host(key) == host);
    (!registries.iter().all(|r| present(&r.host))).then_some("a registry's login missing")
}

/// The logins to write into a Secret (`Unchanged` when it is not managed): an
/// `auths` entry per registry from `tokens` (keyed by host), annotations
/// `expires-at` and `refreshed-at` (`now`), as a JSON Patch against the
/// Secret as given. A needed token missing from `tokens` is an error.
pub fn login(
    secret: &Secret,
    settings: &Settings,
    tokens: &HashMap<String, Token>,
    now: SystemTime,
) -> Result<Decision, Denial> {
    let what = describe(secret, None, "");
    let (registries, config) = match managed(secret, &what, settings)? {
        None => return Ok(Decision::Unchanged("not a managed Secret")),
        Some(found) => found,
    };
    let mut logins = Vec::new();
    for registry in &registries {
        let token = tokens.get(&registry.host).ok_or_else(|| {
            Denial(format!(
                "{what}: no ECR token for {} (region {})",
                registry.host, registry.region
            ))
        })?;
        logins.push((registry.host.as_str(), token));
    }
    let expires_at = logins
        .iter()
        .map(|(_, token)| token.expires_at)
        .min()
        .expect("a managed Secret always has at least one registry");
    let document = config.with_logins(&logins);
    let encoded = base64::engine::general_purpose::STANDARD.encode(document);

    let mut patch = Vec::new();
    if secret.data.is_some() {
        patch.push(add(&["data", CONFIG_KEY], Value::String(encoded)));
    } else {
        patch.push(add(&["data"], json!({ CONFIG_KEY: encoded })));
    }
    let expires = format_time(expires_at);
    // Never earlier than the request it answers (a requester's clock a little
    // ahead), so the write is not due again.
    let refreshed = format_time(requested(secret, now).map_or(now, |asked| asked.max(now)));
    if secret.metadata.annotations.is_some() {
        patch.push(add(
            &["metadata", "annotations", EXPIRES_AT],
            expires.into(),
        ));
        patch.push(add(
            &["metadata", "annotations", REFRESHED_AT],
            refreshed.into(),
        ));
    } else {
        patch.push(add(
            &["metadata", "annotations"],
            json!({ EXPIRES_AT: expires, REFRESHED_AT: refreshed }),
        ));
    }
    Ok(Decision::Inject(Injection {
        patch,
        registries: registries.into_iter().map(|r| r.host).collect(),
        expires_at,
    }))
}

/// A managed Secret's registries and docker config; `None` when it is not managed.
fn managed(
    secret: &Secret,
    what: &str,
    settings: &Settings,
) -> Result<Option<(Vec<EcrRegistry>, DockerConfig)>, Denial> {
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    if !is_managed(&labels) {
        return Ok(None);
    }
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != SECRET_TYPE {
        return Err(Denial(format!(
            "{what} is labelled for managed ECR credentials but has type {kind}: \
             a managed Secret must have type {SECRET_TYPE}"
        )));
    }
    let registries = registries(what, secret, settings)?;
    let config = match secret.data.as_ref().and_then(|data| data.get(CONFIG_KEY)) {
        None => DockerConfig::default(),
        Some(bytes) => DockerConfig::parse(&bytes.0).map_err(|why| {
            Denial(format!(
                "{what}: data {CONFIG_KEY} is not a docker config ({why}); \
                 leave it out or set it to {{\"auths\":{{}}}} and privatize fills it in"
            ))
        })?,
    };
    Ok(Some((registries, config)))
}

/// `ECR_REGISTRY`, then each host of the registries annotation, without duplicates.
fn registries(
    what: &str,
    secret: &Secret,
    settings: &Settings,
) -> Result<Vec<EcrRegistry>, Denial> {
    let mut registries: Vec<EcrRegistry> = settings.registry.iter().cloned().collect();
    let listed = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REGISTRIES_ANNOTATION));
    for host in listed
        .into_iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|host| !host.is_empty())
    {
        let registry = EcrRegistry::parse(host).ok_or_else(|| {
            Denial(format!(
                "{what}: annotation {REGISTRIES_ANNOTATION} names {host:?}, which is not an ECR \
                 registry host (<account>.dkr.ecr.<region>.amazonaws.com)"
            ))
        })?;
        if !registries.iter().any(|r| r.host == registry.host) {
            registries.push(registry);
        }
    }
    if registries.is_empty() {
        return Err(Denial(format!(
            "{what}: no ECR registry to write a login for: privatize has no ECR target \
             (ECR_REGISTRY) and annotation {REGISTRIES_ANNOTATION} lists none"
        )));
    }
    Ok(registries)
}

/// `Secret <namespace>/<name>` for messages (generateName when the name is
/// not set yet; the request's namespace and name when the object lacks them).
fn describe(secret: &Secret, namespace: Option<&str>, name: &str) -> String {
    let metadata = &secret.metadata;
    let name = metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| Some(name.to_string()).filter(|n| !n.is_empty()))
        .or_else(|| metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "?".to_string());
    match metadata.namespace.as_deref().or(namespace) {
        Some(namespace) => format!("Secret {namespace}/{name}"),
        None => format!("Secret {name}"),
    }
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens.iter().copied()),
        value,
    })
}

/// A docker config as raw JSON: top-level members and `auths` entries in their
/// order, each value exactly the bytes it came as.
#[derive(Default)]
struct DockerConfig {
    members: Vec<(String, Box<RawValue>)>,
    auths: Vec<(String, Box<RawValue>)>,
}

impl DockerConfig {
    /// Empty (or blank) data is an empty config; anything else must be a JSON object
    /// whose `auths`, when present, is an object.
    fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let Ordered(members) = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut config = Self::default();
        for (key, value) in members {
            if key == "auths" {
                let Ordered(auths) = serde_json::from_str(value.get())
                    .map_err(|e| format!("\"auths\" is not a JSON object: {e}"))?;
                config.auths = auths;
            }
            config.members.push((key, value));
        }
        Ok(config)
    }

    /// The document with a fresh entry per login: entries for those hosts (under any
    /// spelling: `https://host/…`) are replaced, the rest kept as they were.
    fn with_logins(&self, logins: &[(&str, &Token)]) -> String {
        let mut auths: Vec<(String, String)> = self
            .auths
            .iter()
            .filter(|(key, _)| !logins.iter().any(|(host, _)| auth_host(key) == *host))
            .map(|(key, value)| (key.clone(), value.get().to_string()))
            .collect();
        for (host, token) in logins {
            let user_password = format!("{}:{}", token.username, token.password);
            let entry = json!({
                "username": token.username,
                "password": token.password,
                "auth": base64::engine::general_purpose::STANDARD.encode(user_password),
            });
            auths.push((host.to_string(), entry.to_string()));
        }
        let auths = object(&auths);
        let mut members: Vec<(String, String)> = Vec::new();
        let mut placed = false;
        for (key, value) in &self.members {
            if key == "auths" {
                if !placed {
                    members.push((key.clone(), auths.clone()));
                    placed = true;
                }
            } else {
                members.push((key.clone(), value.get().to_string()));
            }
        }
        if !placed {
            members.insert(0, ("auths".to_string(), auths));
        }
        object(&members)
    }
}

/// The host an `auths` key names: `https://host/v1/` and `HOST` both give `host`.
fn auth_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_ascii_lowercase()
}

/// A JSON object from members whose values are already JSON text.
fn object(members: &[(String, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::String(key.clone())))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A JSON object's members in document order, values as raw JSON.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Box<RawValue>>()? {
                    // A repeated key: the last one wins, as in every JSON reader Go has.
                    members.retain(|(k, _)| *k != key);
                    members.push((key, value));
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(OrderedVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_keys_name_their_host_under_any_spelling() {
        for key in [
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "https://123456789012.DKR.ecr.eu-west-1.amazonaws.com/v1/",
        ] {
            assert_eq!(
                auth_host(key),
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
            );
        }
        assert_eq!(auth_host("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn config_values_keep_their_bytes_and_order() {
        let text = br#"{"credsStore" : "x",  "auths":{"b.io":{ "auth" : "YTpi" },"a.io":{"auth":"YzpkCg==","extra":[1, 2]}}}"#;
        let config = DockerConfig::parse(text).unwrap();
        let token = Token {
            username: "AWS".into(),
            password: "pw".into(),
            expires_at: SystemTime::UNIX_EPOCH,
        };
        let out = config.with_logins(&[("r.io", &token)]);
        assert_eq!(
            out,
            r#"{"credsStore":"x","auths":{"b.io":{ "auth" : "YTpi" },"a.io":{"auth":"YzpkCg==","extra":[1, 2]},"r.io":{"auth":"QVdTOnB3","password":"pw","username":"AWS"}}}"#
        );
    }

    #[test]
    fn blank_config_is_empty_and_non_objects_are_refused() {
        assert!(DockerConfig::parse(b"").unwrap().auths.is_empty());
        assert!(DockerConfig::parse(b" \n").unwrap().auths.is_empty());
        assert!(DockerConfig::parse(b"[]").is_err());
        assert!(DockerConfig::parse(b"FAKE").is_err());
        assert!(DockerConfig::parse(br#"{"auths":"x"}"#).is_err());
    }

    #[test]
    fn annotation_times_round_trip() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_790_000_000_123);
        let text = format_time(at);
        assert_eq!(text, "2026-09-21T14:13:20.123Z");
        assert_eq!(parse_time(&text), Some(at));
        assert!(parse_time("2026-09-21T14:13:20Z").is_some());
        assert_eq!(parse_time("tomorrow"), None);
    }
}
