//! Room: `privatize gen-certs`. Keep a valid serving certificate or issue a
//! new CA + certificate, then write files, the TLS Secret and the caBundle.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use crate::cli::GenCertsArgs;
use crate::k8s::{self, Object, MANAGED_BY};
use crate::tls::{self, Issued};

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// What happened to the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Kept,
    Issued,
}

/// Runs `gen-certs`.
pub async fn run(args: GenCertsArgs) -> Result<()> {
    if args.out_dir.is_none() && args.secret.is_none() && args.webhook_config.is_none() {
        bail!("nothing to do: give --out-dir, --secret and/or --webhook-config");
    }
    let sans = tls::service_sans(&args.service, &args.namespace, &args.sans);
    let client = match (&args.secret, &args.webhook_config) {
        (None, None) => None,
        _ => Some(k8s::client().await?),
    };
    let existing = match (&client, &args.secret, &args.out_dir) {
        (Some(client), Some(secret), _) => read_secret(client, &args.namespace, secret).await?,
        (_, _, Some(dir)) => read_dir(dir)?,
        _ => None,
    };
    let (issued, outcome) = keep_or_issue(existing, &sans, args.force)?;
    if let Some(dir) = &args.out_dir {
        write_dir(dir, &issued)?;
    }
    if let (Some(client), Some(secret)) = (&client, &args.secret) {
        apply_secret(client, &args.namespace, secret, &issued).await?;
    }
    if let (Some(client), Some(config)) = (&client, &args.webhook_config) {
        patch_ca_bundle(client, config, &issued.ca_pem).await?;
    }
    let info = tls::inspect(issued.cert_pem.as_bytes())?;
    let expires = humantime_rfc3339(info.not_after);
    match outcome {
        Outcome::Kept => println!(
            "certificate kept: valid until {expires} for {}",
            sans.join(", ")
        ),
        Outcome::Issued => println!(
            "certificate issued: valid until {expires} for {}",
            sans.join(", ")
        ),
    }
    Ok(())
}

/// Keeps `existing` when it is still good (and not `force`d), else issues anew.
pub fn keep_or_issue(
    existing: Option<Issued>,
    sans: &[String],
    force: bool,
) -> Result<(Issued, Outcome)> {
    if let Some(current) = existing.filter(|_| !force) {
        if let Ok(info) = tls::inspect(current.cert_pem.as_bytes()) {
            if tls::still_good(&info, sans, SystemTime::now()) {
                return Ok((current, Outcome::Kept));
            }
        }
    }
    Ok((tls::issue(sans)?, Outcome::Issued))
}

/// Makes sure the TLS Secret holds a good certificate and returns it (used by `install`).
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    secret: &str,
    sans: &[String],
) -> Result<(Issued, Outcome)> {
    let existing = read_secret(client, namespace, secret).await?;
    let (issued, outcome) = keep_or_issue(existing, sans, false)?;
    apply_secret(client, namespace, secret, &issued).await?;
    Ok((issued, outcome))
}

async fn read_secret(client: &Client, namespace: &str, name: &str) -> Result<Option<Issued>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {name} in {namespace}"))?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let field = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Ok(match (field(CA_KEY), field(CERT_KEY), field(KEY_KEY)) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(Issued {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

/// The TLS Secret object (also rendered by `install --dry-run`-free paths).
pub fn secret_object(namespace: &str, name: &str, issued: &Issued) -> Result<Object> {
    let data: BTreeMap<String, ByteString> = [
        (CA_KEY, &issued.ca_pem),
        (CERT_KEY, &issued.cert_pem),
        (KEY_KEY, &issued.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    };
    Object::new(&secret, true)
}

async fn apply_secret(client: &Client, namespace: &str, name: &str, issued: &Issued) -> Result<()> {
    k8s::apply(client, &secret_object(namespace, name, issued)?).await?;
    Ok(())
}

/// Sets `caBundle` on every webhook of the configuration that lacks this CA.
pub async fn patch_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {name}"))?
        .with_context(|| format!("MutatingWebhookConfiguration {name} not found"))?;
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
            let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .context("building the caBundle patch")?;
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .with_context(|| format!("patching caBundle of MutatingWebhookConfiguration {name}"))?;
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Option<Issued>> {
    let read = |name: &str| -> Result<Option<String>> {
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", dir.join(name).display())),
        }
    };
    Ok(match (read(CA_KEY)?, read(CERT_KEY)?, read(KEY_KEY)?) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(Issued {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

fn write_dir(dir: &Path, issued: &Issued) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text, private) in [
        (CA_KEY, &issued.ca_pem, false),
        (CERT_KEY, &issued.cert_pem, false),
        (KEY_KEY, &issued.key_pem, true),
    ] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        write_file(&path, text, private).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 });
    options.open(path)?.write_all(text.as_bytes())
}

fn humantime_rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}
