//! serve renews its serving certificate in the TLS Secret (`--tls-secret`)
//! before it expires. The decisions are `tls::renewal`'s; this file reads,
//! writes and logs, in the order that keeps every admission working: the
//! webhooks' caBundle trusts the new CA first, then the Secret changes, and
//! replicas load it from their mounted volume (kubelet, then CertWatcher).
//! One replica wins a race: both writes carry the resourceVersion read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::metrics::Metrics;
use crate::cli::RenewArgs;
use crate::k8s::{CA_KEY, CERT_KEY, KEY_KEY};
use crate::tls::renewal::{self, Plan, Reason};
use crate::tls::{self, Issued};

/// Time the apiservers get to load a new caBundle before any replica can
/// serve a certificate only it trusts: their webhook informers take well
/// under a second; several apiservers behind a load balancer, a bit more.
const TRUST_PROPAGATION: Duration = Duration::from_secs(5);
/// After a failed pass, the next comes at most this much later.
const RETRY: Duration = Duration::from_secs(60);
/// Passes in a row that may meet a conflict (another replica, install).
const ATTEMPTS: usize = 3;
/// The chart's record of the certificate's expiry (charts/privatize/templates/webhook.yaml):
/// kept true when present, so an upgrade reuses the renewed certificate.
const CHART_NOT_AFTER: &str = "privatize.io/tls-not-after";

/// Renews the certificate in one Secret; see the module doc.
pub struct Renewer {
    client: Client,
    namespace: String,
    secret: String,
    webhook_config: String,
    renew_before: Duration,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// Whether the missing webhook configuration was logged already.
    waiting_logged: AtomicBool,
}

/// How one attempt ended.
enum Attempt {
    Done,
    /// The webhook configuration does not exist (yet: install registers it
    /// once serve is ready). Nothing is renewed without it: no caBundle could
    /// learn the new CA first.
    NoWebhooks,
    /// Someone wrote the object in between: read everything again.
    Conflict(&'static str),
}

impl Renewer {
    /// `None` when renewal is off (no `--tls-secret`).
    pub fn new(
        args: &RenewArgs,
        namespace: &str,
        client: Client,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        Some(Self {
            client,
            namespace: namespace.to_string(),
            secret: args.tls_secret.clone()?,
            webhook_config: args.webhook_config.clone(),
            renew_before: args.tls_renew_before,
            interval: args.tls_renew_check_interval,
            metrics,
            waiting_logged: AtomicBool::new(false),
        })
    }

    /// `namespace/name` of the Secret, for logs.
    fn described(&self) -> String {
        format!("{}/{}", self.namespace, self.secret)
    }

    /// Looks at the Secret now and every check interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        info!(
            secret = %self.described(),
            webhook_config = %self.webhook_config,
            renew_before = %humantime::format_duration(self.renew_before),
            check_interval = %humantime::format_duration(self.interval),
            "serving certificate renewal on"
        );
        loop {
            let wait = match self.pass().await {
                Ok(Attempt::NoWebhooks) => self.interval.min(RETRY),
                Ok(_) => self.interval,
                Err(err) => {
                    self.metrics.certificate_renewal("failed");
                    error!(
                        secret = %self.described(),
                        error = %format!("{err:#}"),
                        "renewing the serving certificate in Secret {} failed; serve keeps the certificate it has",
                        self.described()
                    );
                    self.interval.min(RETRY)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn pass(&self) -> Result<Attempt> {
        for _ in 0..ATTEMPTS {
            match self.attempt().await? {
                Attempt::Conflict(what) => {
                    debug!(secret = %self.described(), changed = what, "changed meanwhile; reading again")
                }
                done => return Ok(done),
            }
        }
        bail!("{ATTEMPTS} attempts in a row met a concurrent change")
    }

    async fn attempt(&self) -> Result<Attempt> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets
            .get(&self.secret)
            .await
            .with_context(|| format!("reading Secret {}", self.described()))?;
        let Some(config) = self.read_config().await? else {
            if !self.waiting_logged.swap(true, Ordering::Relaxed) {
                info!(
                    secret = %self.described(),
                    webhook_config = %self.webhook_config,
                    "no MutatingWebhookConfiguration {} (yet): the certificate is not renewed without it",
                    self.webhook_config
                );
            }
            return Ok(Attempt::NoWebhooks);
        };
        self.waiting_logged.store(false, Ordering::Relaxed);
        let registered = ca_bundles(&config);
        let names = webhook_names(&config);
        let content = tls_content(&secret);
        let now = SystemTime::now();
        let plan = renewal::plan(
            content.as_ref().map_err(String::as_str),
            &registered,
            &names,
            self.renew_before,
            now,
        );
        match plan {
            Plan::Keep { bundle: None } => {
                debug!(secret = %self.described(), "serving certificate kept");
                Ok(Attempt::Done)
            }
            Plan::Keep {
                bundle: Some(bundle),
            } => {
                if !patch_ca_bundle(&self.client, &config, &bundle).await? {
                    return Ok(Attempt::Conflict("MutatingWebhookConfiguration"));
                }
                info!(
                    webhook_config = %self.webhook_config,
                    cas = tls::count_certificates(&bundle),
                    "caBundle brought in line with Secret {}", self.described()
                );
                Ok(Attempt::Done)
            }
            Plan::Renew { reason, sans } => {
                let secret_ca = content.as_ref().ok().map(|c| c.ca_pem.as_str());
                self.renew(secret, &config, &registered, secret_ca, reason, sans)
                    .await
            }
        }
    }

    async fn read_config(&self) -> Result<Option<MutatingWebhookConfiguration>> {
        Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .get_opt(&self.webhook_config)
            .await
            .with_context(|| {
                format!(
                    "reading MutatingWebhookConfiguration {}",
                    self.webhook_config
                )
            })
    }

    async fn renew(
        &self,
        secret: Secret,
        config: &MutatingWebhookConfiguration,
        registered: &[String],
        secret_ca: Option<&str>,
        reason: Reason,
        sans: Vec<String>,
    ) -> Result<Attempt> {
        if let Reason::Unusable(_) = reason {
            warn!(
                secret = %self.described(),
                reason = %reason,
                "Secret {} holds {reason}; issuing a new certificate (serve keeps serving the one it has)",
                self.described()
            );
        }
        if sans.is_empty() {
            bail!(
                "no name to issue a certificate for: Secret {} has no readable certificate and MutatingWebhookConfiguration {} names no Service or URL",
                self.described(),
                self.webhook_config
            );
        }
        let renewed = tls::issue(&sans).context("issuing the new serving certificate")?;
        let now = SystemTime::now();
        let bundle = renewal::bundle_for_renewal(&renewed, registered, secret_ca, now)?;
        // 1. The webhooks trust the new CA, next to every CA that may still serve.
        if !patch_ca_bundle(&self.client, config, &bundle).await? {
            return Ok(Attempt::Conflict("MutatingWebhookConfiguration"));
        }
        info!(
            webhook_config = %self.webhook_config,
            cas = tls::count_certificates(&bundle),
            "caBundle trusts the new CA; the Secret follows"
        );
        tokio::time::sleep(TRUST_PROPAGATION).await;
        // Something else (install, gen-certs, a person) may have set caBundle
        // since: never write a certificate the webhooks would not trust.
        let Some(now_config) = self.read_config().await? else {
            return Ok(Attempt::NoWebhooks);
        };
        let now_registered = ca_bundles(&now_config);
        if !renewal::trusted_by_all(&renewed.cert_pem, &now_registered, SystemTime::now()) {
            return Ok(Attempt::Conflict("caBundle"));
        }
        // 2. The Secret, only if nobody wrote it since it was read.
        let updated = with_certificate(secret, &renewed)?;
        let written = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .replace(&self.secret, &PostParams::default(), &updated)
            .await;
        match written {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.metrics.certificate_renewal("lost");
                info!(
                    secret = %self.described(),
                    "Secret {} changed since it was read (another replica renewed it?); reading again",
                    self.described()
                );
                return Ok(Attempt::Conflict("Secret"));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("writing Secret {}", self.described()))
            }
        }
        self.metrics.certificate_renewal("renewed");
        let info = tls::inspect(renewed.cert_pem.as_bytes())?;
        info!(
            secret = %self.described(),
            reason = reason.as_str(),
            why = %reason,
            not_after = %humantime::format_rfc3339_seconds(info.not_after),
            sans = %sans.join(","),
            webhook_config = %self.webhook_config,
            cas_trusted = tls::count_certificates(&bundle),
            "serving certificate renewed"
        );
        Ok(Attempt::Done)
    }
}

/// Sets `bundle` on every webhook of `config`, if `config` is still the
/// version the apiserver holds; `Ok(false)` when it is not (409: read again).
pub async fn patch_ca_bundle(
    client: &Client,
    config: &MutatingWebhookConfiguration,
    bundle: &str,
) -> Result<bool> {
    let name = config.name_any();
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    // The read resourceVersion makes the apiserver refuse (409) a patch of a newer version.
    let mut ops = vec![serde_json::json!({
        "op": "replace", "path": "/metadata/resourceVersion", "value": config.resource_version(),
    })];
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
        ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .context("building the caBundle patch")?;
    let result = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err)
            .with_context(|| format!("patching caBundle of MutatingWebhookConfiguration {name}")),
    }
}

/// Each webhook's caBundle as PEM (empty when it has none).
fn ca_bundles(config: &MutatingWebhookConfiguration) -> Vec<String> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            let bytes = w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice());
            String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
        })
        .collect()
}

/// The hosts the apiserver calls serve by: every name of a Service
/// reference, or a URL's host.
fn webhook_names(config: &MutatingWebhookConfiguration) -> Vec<String> {
    let mut names = Vec::new();
    for webhook in config.webhooks.iter().flatten() {
        let client = &webhook.client_config;
        let found = match (&client.service, &client.url) {
            (Some(service), _) => tls::service_sans(&service.name, &service.namespace, &[]),
            (None, Some(url)) => renewal::url_host(url).into_iter().collect(),
            (None, None) => Vec::new(),
        };
        for name in found {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The Secret's CA, certificate and key; `Err` names what is missing.
fn tls_content(secret: &Secret) -> std::result::Result<Issued, String> {
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| format!("no {key} in the Secret"))
    };
    Ok(Issued {
        ca_pem: field(CA_KEY)?,
        cert_pem: field(CERT_KEY)?,
        key_pem: field(KEY_KEY)?,
    })
}

/// The Secret as read (resourceVersion, labels, other keys) with the new
/// CA, certificate and key, and the chart's expiry record kept true.
fn with_certificate(mut secret: Secret, renewed: &Issued) -> Result<Secret> {
    let data = secret.data.get_or_insert_with(Default::default);
    for (key, pem) in [
        (CA_KEY, &renewed.ca_pem),
        (CERT_KEY, &renewed.cert_pem),
        (KEY_KEY, &renewed.key_pem),
    ] {
        data.insert(key.to_string(), ByteString(pem.as_bytes().to_vec()));
    }
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        if let Some(not_after) = annotations.get_mut(CHART_NOT_AFTER) {
            let info = tls::inspect(renewed.cert_pem.as_bytes())?;
            *not_after = humantime::format_rfc3339_seconds(info.not_after).to_string();
        }
    }
    Ok(secret)
}
