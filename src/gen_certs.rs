//! Room: `privatize gen-certs`. Keep a valid serving certificate or issue a
//! new CA + certificate, then patch the caBundle (old and new CA during a
//! rotation) and write files and the TLS Secret.

use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::cli::GenCertsArgs;
use crate::k8s;
use crate::tls::{self, Issued, Outcome};

const CA_FILE: &str = "ca.crt";
const CERT_FILE: &str = "tls.crt";
const KEY_FILE: &str = "tls.key";

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
        (Some(client), Some(secret), _) => {
            k8s::read_tls_secret(client, &args.namespace, secret).await?
        }
        (_, _, Some(dir)) => read_dir(dir)?,
        _ => None,
    };
    let (issued, outcome) = tls::keep_or_issue(existing, &sans, args.force)?;
    // The webhooks learn a new CA before any server can present a certificate
    // it signed, and keep the old one while a server may still present its.
    let mut trusted = 1;
    if let (Some(client), Some(config)) = (&client, &args.webhook_config) {
        let registered = k8s::read_ca_bundle(client, config)
            .await?
            .with_context(|| format!("MutatingWebhookConfiguration {config} not found"))?;
        let bundle = tls::ca_bundle(Some(&registered), &issued, SystemTime::now())?;
        k8s::patch_ca_bundle(client, config, &bundle).await?;
        trusted = tls::count_certificates(&bundle);
    }
    if let Some(dir) = &args.out_dir {
        write_dir(dir, &issued)?;
    }
    if let (Some(client), Some(secret)) = (&client, &args.secret) {
        k8s::apply(client, &k8s::tls_secret(&args.namespace, secret, &issued)?).await?;
    }
    let info = tls::inspect(issued.cert_pem.as_bytes())?;
    let expires = humantime_rfc3339(info.not_after);
    let verb = match outcome {
        Outcome::Kept => "kept",
        Outcome::Issued => "issued",
    };
    println!(
        "certificate {verb}: valid until {expires} for {}",
        sans.join(", ")
    );
    if trusted > 1 {
        println!(
            "caBundle: the current CA and {} previous, trusted until the rotation settles \
             (the first run {} minutes after it drops them)",
            trusted - 1,
            (tls::ROTATION_GRACE - tls::BACKDATE).as_secs() / 60
        );
    }
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
    Ok(match (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?) {
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
        (CA_FILE, &issued.ca_pem, false),
        (CERT_FILE, &issued.cert_pem, false),
        (KEY_FILE, &issued.key_pem, true),
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
