//! `privatize serve`'s flags: the listeners, TLS, the pod webhook, copy Jobs
//! and the gate. Split from cli.rs only for length.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{redacted, ReferrerArgs, RepositoryArgs, TransportArgs};

/// TLS for the webhook server. Its `Debug` hides the key.
#[derive(Clone, Args)]
pub struct TlsArgs {
    /// Serving certificate file (PEM); re-read when it changes
    #[arg(
        long,
        env = "SERVER_TLS_CERT_PATH",
        default_value = "/etc/privatize/tls/tls.crt"
    )]
    pub tls_cert_path: PathBuf,

    /// Serving key file (PEM); re-read when it changes
    #[arg(
        long,
        env = "SERVER_TLS_KEY_PATH",
        default_value = "/etc/privatize/tls/tls.key"
    )]
    pub tls_key_path: PathBuf,

    /// Serving certificate as PEM text (wins over --tls-cert-path)
    #[arg(long, env = "SERVER_TLS_CERT", hide_env_values = true)]
    pub tls_cert: Option<String>,

    /// Serving key as PEM text (wins over --tls-key-path)
    #[arg(long, env = "SERVER_TLS_KEY", hide_env_values = true)]
    pub tls_key: Option<String>,

    /// CA file (PEM): both webhooks then refuse, in the TLS handshake, every caller without a client certificate signed by it (the apiserver presents one through its AdmissionConfiguration). Read at start
    #[arg(long, env = "PRIVATIZE_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for TlsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsArgs")
            .field("tls_cert_path", &self.tls_cert_path)
            .field("tls_key_path", &self.tls_key_path)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &redacted(&self.tls_key))
            .field("client_ca_file", &self.client_ca_file)
            .finish()
    }
}

/// Renewal of the serving certificate in its Secret; off unless `--tls-secret` is set.
#[derive(Debug, Clone, Args)]
pub struct RenewArgs {
    /// The TLS Secret in serve's namespace (POD_NAMESPACE) holding the serving certificate: serve renews it before it expires, a new CA and certificate, after the webhooks' caBundle trusts the new CA. Unset: no renewal (outside a cluster, or when something else manages the Secret) [default: none]
    #[arg(long, env = "PRIVATIZE_TLS_SECRET")]
    pub tls_secret: Option<String>,

    /// Renew the serving certificate in --tls-secret once it has less than this left
    #[arg(long, env = "PRIVATIZE_TLS_RENEW_BEFORE", default_value = "30d", value_parser = humantime::parse_duration)]
    pub tls_renew_before: std::time::Duration,

    /// How often --tls-secret is looked at (after a failed look, at most every minute)
    #[arg(long, env = "PRIVATIZE_TLS_RENEW_CHECK_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub tls_renew_check_interval: std::time::Duration,

    /// The MutatingWebhookConfiguration whose webhooks' caBundle must trust the renewed certificate
    #[arg(long, env = "PRIVATIZE_WEBHOOK_CONFIG", default_value = "privatize")]
    pub webhook_config: String,
}

/// Which platforms serve's copy Jobs copy of a multi-platform tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Platforms {
    /// Every platform of the image
    All,
    /// The platforms of the cluster's nodes
    Auto,
    /// These (`os/arch[/variant]`)
    List(Vec<String>),
}

pub(super) fn parse_platforms(text: &str) -> Result<Platforms, String> {
    match text.trim() {
        "" | "all" => return Ok(Platforms::All),
        "auto" => return Ok(Platforms::Auto),
        _ => {}
    }
    let mut list = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parts: Vec<&str> = entry.split('/').collect();
        let plausible = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(plausible) {
            return Err(format!(
                "{entry:?} is not OS/ARCH[/VARIANT] (e.g. linux/arm64); use `all`, `auto` or a comma-separated list"
            ));
        }
        list.push(entry.to_string());
    }
    list.sort();
    list.dedup();
    if list.is_empty() {
        return Ok(Platforms::All);
    }
    Ok(Platforms::List(list))
}

/// What serve does when a mirrored tag's source tag points elsewhere now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TagDrift {
    /// Never look
    Ignore,
    /// An admission warning, a log line and privatize_tags_drifted_total
    Warn,
    /// As warn, and one copy Job moves the mirror's tag to what the source tag is now
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwapPolicy {
    /// Private image plus a scheduling gate until the copy lands
    Gate,
    /// Private image at once (a pull may fail until the copy lands)
    Always,
    /// Original image until the copy exists
    Exists,
}

/// `privatize serve`
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTPS port for admission reviews
    #[arg(long, env = "SERVER_HTTPS_PORT", default_value_t = 8443)]
    pub https_port: u16,

    /// Plain-HTTP port for /healthz, /readyz and /metrics
    #[arg(long, env = "SERVER_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub renew: RenewArgs,

    /// Target registry with an optional prefix: REGISTRY[/PREFIX]
    #[arg(long = "target-registry", env = "ECR_REGISTRY")]
    pub target_registry: Option<String>,

    /// What a pod whose image is not mirrored yet gets
    #[arg(long, env = "PRIVATIZE_SWAP_POLICY", value_enum, default_value_t = SwapPolicy::Gate)]
    pub swap_policy: SwapPolicy,

    /// What a pod of a mirrored tag whose source tag now points elsewhere gets: its source tag is re-read (a manifest HEAD) at most once per --tag-recheck-interval per tag; pods keep starting from the current copy, ungated
    #[arg(long, env = "PRIVATIZE_TAG_DRIFT", value_enum, default_value_t = TagDrift::Warn)]
    pub tag_drift: TagDrift,

    /// Rewrite a tag whose copy is in the mirror to `target:tag@sha256:…` of that copy, so every replica of a rollout runs the same bytes (a gated pod keeps the tag: its copy is not there yet)
    #[arg(long, env = "PRIVATIZE_PIN_DIGESTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pin_digests: bool,

    /// Platforms a copy Job copies of a multi-platform tag: `all`, `auto` (those of the cluster's nodes, from their kubernetes.io/os and kubernetes.io/arch labels: serve then watches Nodes, and a node of a new platform gets the tags in use copied again with it) or OS/ARCH[/VARIANT],... (OS/ARCH is every variant). Digest-pinned references always get every platform: filtering would change their digest
    #[arg(long, env = "PRIVATIZE_PLATFORMS", default_value = "all", value_parser = parse_platforms)]
    pub platforms: Platforms,

    /// How long a tag's re-read source digest is trusted (e.g. `1h`, `15m`)
    #[arg(long, env = "PRIVATIZE_TAG_RECHECK_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub tag_recheck_interval: std::time::Duration,

    /// Registries or image globs never rewritten (comma-separated); the target is always excluded
    #[arg(long, env = "PRIVATIZE_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,

    /// Namespaces (globs) whose pods are never rewritten
    #[arg(
        long,
        env = "PRIVATIZE_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,privatize"
    )]
    pub exclude_namespaces: Vec<String>,

    /// Only rewrite images from these registries (comma-separated); all when empty
    #[arg(long, env = "PRIVATIZE_INCLUDE_REGISTRIES", value_delimiter = ',')]
    pub include_registries: Vec<String>,

    /// Log and count what would change, change nothing
    #[arg(long, env = "PRIVATIZE_DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Namespace of the copy Jobs
    #[arg(long, env = "COPY_JOB_NAMESPACE", default_value = "privatize")]
    pub copy_job_namespace: String,

    /// Image of the copy Jobs [default: the image `serve` runs, from the downward API]
    #[arg(long, env = "COPY_JOB_IMAGE")]
    pub copy_job_image: Option<String>,

    /// Service account of the copy Jobs
    #[arg(
        long,
        env = "COPY_JOB_SERVICE_ACCOUNT_NAME",
        default_value = "privatize"
    )]
    pub copy_job_service_account_name: String,

    /// backoffLimit of the copy Jobs
    #[arg(long, env = "COPY_JOB_BACKOFF_LIMIT", default_value_t = 1)]
    pub copy_job_backoff_limit: i32,

    /// completions of the copy Jobs
    #[arg(long, env = "COPY_JOB_COMPLETION", default_value_t = 1)]
    pub copy_job_completion: i32,

    /// Rewrite a pod only in a namespace enabled for ECR credentials, where serve first makes sure the managed pull Secret exists (ECR targets outside AWS, whose nodes cannot pull the mirror otherwise); elsewhere the pod is left unchanged, with a warning
    #[arg(long, env = "PRIVATIZE_REQUIRE_PULL_SECRET", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_pull_secret: bool,

    /// Namespaces (globs, comma-separated) whose managed Secrets this serve writes logins into, among those labelled for ECR credentials (several installations in one cluster, tests)
    #[arg(
        long,
        env = "PRIVATIZE_CREDENTIAL_NAMESPACES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub credential_namespaces: Vec<String>,

    /// Name of the managed pull Secret added to rewritten pods in ECR-enabled namespaces
    #[arg(
        long,
        env = "PRIVATIZE_PULL_SECRET_NAME",
        default_value = "privatize-ecr"
    )]
    pub pull_secret_name: String,

    #[command(flatten)]
    pub transport: TransportArgs,

    /// Address both ports listen on (`0.0.0.0`, `::`, `127.0.0.1`)
    #[arg(long, env = "PRIVATIZE_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: std::net::IpAddr,

    /// Time one admission may take; past it a pod is allowed unchanged (with a warning) and a Secret is denied
    #[arg(long, env = "PRIVATIZE_ADMISSION_BUDGET", default_value = "5s", value_parser = humantime::parse_duration)]
    pub admission_budget: std::time::Duration,

    /// How often the certificate files are read to notice a rotated certificate
    #[arg(long, env = "PRIVATIZE_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: std::time::Duration,

    /// Time a client has for the TLS handshake and for each request's headers (HTTP/1.1: counted from the end of the previous request)
    #[arg(long, env = "PRIVATIZE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: std::time::Duration,

    /// Time a client has to send a whole request body (408 past it)
    #[arg(long, env = "PRIVATIZE_BODY_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: std::time::Duration,

    /// Memory all admission reviews in flight may hold together, across connections: request bytes, then the parsed review as charged while it is read (a small JSON object can become kilobytes). A review that does not fit now gets 429 at once (the apiserver applies the webhook's failurePolicy); one that alone would need more gets 413. Units: KiB, MiB, GiB
    #[arg(long, env = "PRIVATIZE_REVIEW_MEMORY_BUDGET", default_value = "32MiB", value_parser = parse_bytes)]
    pub review_memory_budget: usize,

    /// A connection with no request in flight and no bytes moving for this long is closed (an idle HTTP/1.1 connection already closes after --header-read-timeout)
    #[arg(long, env = "PRIVATIZE_IDLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub idle_timeout: std::time::Duration,

    /// On SIGTERM, /readyz fails this long before connections close, so endpoints drop the pod first; the listeners then keep answering late callers (each connection once) until none has been open for 2 s (at most this delay)
    #[arg(long, env = "PRIVATIZE_SHUTDOWN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_delay: std::time::Duration,

    /// After the delay, the drain (late callers, requests in flight) gets this long
    #[arg(long, env = "PRIVATIZE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: std::time::Duration,

    /// How long a "present" answer from the target registry is trusted (a pruned repository is noticed after this)
    #[arg(long, env = "PRIVATIZE_PRESENCE_CACHE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub presence_cache_ttl: std::time::Duration,

    /// How often every gated pod is looked at again (catches missed Job events)
    #[arg(long, env = "PRIVATIZE_SWEEP_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_interval: std::time::Duration,

    /// A pod gated longer than this gets its original images back and is released
    #[arg(long, env = "PRIVATIZE_GATE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub gate_timeout: std::time::Duration,

    /// Copy Jobs running at once, in all; more wait (their pods stay gated, the gate timeout still applies)
    #[arg(long, env = "PRIVATIZE_MAX_COPY_JOBS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_copy_jobs: u32,

    /// Copy Jobs running at once for pods of one namespace (its share of --max-copy-jobs)
    #[arg(long, env = "PRIVATIZE_MAX_COPY_JOBS_PER_NAMESPACE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_copy_jobs_per_namespace: u32,

    /// Distinct images to mirror one pod may have; a pod with more is allowed unchanged, with a warning
    #[arg(long, env = "PRIVATIZE_MAX_IMAGES_PER_POD", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_images_per_pod: u32,

    /// Namespaces (globs, comma-separated) whose pods may have images mirrored that cannot be read anonymously; elsewhere such an image is left unchanged [default: none]
    #[arg(
        long,
        env = "PRIVATIZE_PRIVATE_SOURCE_NAMESPACES",
        value_delimiter = ','
    )]
    pub private_source_namespaces: Vec<String>,

    /// activeDeadlineSeconds of the copy Jobs
    #[arg(long, env = "PRIVATIZE_COPY_JOB_ACTIVE_DEADLINE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub copy_job_active_deadline: std::time::Duration,

    /// ttlSecondsAfterFinished of the copy Jobs
    #[arg(long, env = "PRIVATIZE_COPY_JOB_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub copy_job_ttl: std::time::Duration,

    /// A kubernetes.io/dockerconfigjson Secret in the copy-Job namespace, mounted as every copy Job's DOCKER_CONFIG (source credentials; a pod's own imagePullSecrets are never used)
    #[arg(long, env = "PRIVATIZE_SOURCE_CREDENTIALS_SECRET")]
    pub source_credentials_secret: Option<String>,

    /// Partial pod spec (YAML or JSON) merged into every copy Job's pod; only placement and credential fields are taken: nodeSelector, tolerations, affinity, priorityClassName, imagePullSecrets, hostNetwork, dnsPolicy, volumes (no hostPath), the copy container's resources, env, envFrom, volumeMounts
    #[arg(long, env = "PRIVATIZE_COPY_JOB_POD_TEMPLATE", value_name = "FILE")]
    pub copy_job_pod_template: Option<PathBuf>,

    #[command(flatten)]
    pub repository: RepositoryArgs,

    #[command(flatten)]
    pub referrers: ReferrerArgs,
}

/// A size such as `96MiB`, `512KiB`, `1GiB` or a number of bytes (`Ki`, `Mi`
/// and `Gi` as Kubernetes writes them are accepted too).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "Ki" => 10,
        "MiB" | "Mi" => 20,
        "GiB" | "Gi" => 30,
        other => return Err(format!("unknown unit {other:?}: use KiB, MiB or GiB")),
    };
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 96MiB"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_are_read_in_binary_units() {
        assert_eq!(parse_bytes("96MiB"), Ok(96 << 20));
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("96MB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("MiB").is_err());
    }
}
