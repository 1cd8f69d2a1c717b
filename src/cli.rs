//! The command line: every setting is a typed clap argument with a flag, an
//! environment variable and a default. These structs *are* the configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod log;
mod parse;
mod serve;

pub use log::{LogArgs, LogFilter, LogFormat};
pub use serve::{Platforms, RenewArgs, ServeArgs, SwapPolicy, TagDrift, TlsArgs};

/// Keep every image your cluster runs in your own registry (AWS ECR first),
/// and keep ECR pull credentials fresh in clusters anywhere.
#[derive(Debug, Parser)]
#[command(
    name = "privatize",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials
    Serve(Box<ServeArgs>),
    /// Copy images (every platform, exact bytes) into the target registry
    SyncImage(SyncImageArgs),
    /// Refresh ECR credentials in managed Secrets that expire soon
    RefreshSecrets(RefreshSecretsArgs),
    /// Create the webhook's CA and serving certificate and patch the caBundle
    GenCerts(GenCertsArgs),
    /// Render and server-side apply every object privatize needs
    Install(InstallArgs),
    /// Remove privatize from a cluster, the webhook configuration first
    Uninstall(UninstallArgs),
    /// Write shell completions and man pages (for packagers and CI)
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Which kind of registry the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// ECR when the host is an ECR host (`<account>.dkr.ecr.<region>.amazonaws.com`), a plain registry otherwise
    Auto,
    /// AWS ECR: repositories are created through the ECR API, login with GetAuthorizationToken
    Ecr,
    /// Any OCI registry: auth from a docker `config.json` or `--dest-creds`
    Registry,
}

/// Registry transport and credentials. Its `Debug` hides the credentials.
#[derive(Clone, Args)]
pub struct TransportArgs {
    /// Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)
    #[arg(long = "ca-file", env = "PRIVATIZE_CA_FILE", value_delimiter = ',')]
    pub ca_files: Vec<PathBuf>,

    /// Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification
    #[arg(
        long = "plain-http",
        env = "PRIVATIZE_PLAIN_HTTP",
        value_delimiter = ','
    )]
    pub plain_http: Vec<String>,

    /// Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]
    #[arg(long, env = "PRIVATIZE_AUTHFILE")]
    pub authfile: Option<PathBuf>,

    /// Source registry credentials as USER:PASSWORD (overrides the authfile)
    #[arg(long, env = "PRIVATIZE_SRC_CREDS", hide_env_values = true)]
    pub src_creds: Option<String>,

    /// Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)
    #[arg(long, env = "PRIVATIZE_DEST_CREDS", hide_env_values = true)]
    pub dest_creds: Option<String>,

    /// Kind of the target registry
    #[arg(long, env = "PRIVATIZE_TARGET_KIND", value_enum, default_value_t = TargetKind::Auto)]
    pub target_kind: TargetKind,
}

impl std::fmt::Debug for TransportArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportArgs")
            .field("ca_files", &self.ca_files)
            .field("plain_http", &self.plain_http)
            .field("authfile", &self.authfile)
            .field("src_creds", &redacted(&self.src_creds))
            .field("dest_creds", &redacted(&self.dest_creds))
            .field("target_kind", &self.target_kind)
            .finish()
    }
}

/// Whether a secret was given, never its value: for hand-written `Debug`s.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

/// How a missing ECR repository is created, and whether drift is repaired.
#[derive(Debug, Clone, Args)]
pub struct RepositoryArgs {
    /// Scan images on push in new ECR repositories
    #[arg(long, env = "PRIVATIZE_SCAN_ON_PUSH", default_value_t = true, action = clap::ArgAction::Set)]
    pub scan_on_push: bool,

    /// Tag mutability of new ECR repositories
    #[arg(long, env = "PRIVATIZE_TAG_MUTABILITY", value_enum, default_value_t = TagMutability::Mutable)]
    pub tag_mutability: TagMutability,

    /// KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset
    #[arg(long, env = "PRIVATIZE_KMS_KEY")]
    pub kms_key: Option<String>,

    /// Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set
    #[arg(
        long = "repository-tag",
        env = "PRIVATIZE_REPOSITORY_TAGS",
        value_delimiter = ','
    )]
    pub repository_tags: Vec<String>,

    /// Repository policy (JSON text) applied to new repositories
    #[arg(long, env = "ECR_REPOSITORY_POLICY_TEXT")]
    pub repository_policy: Option<String>,

    /// Lifecycle policy (JSON text) applied to new repositories
    #[arg(long, env = "PRIVATIZE_LIFECYCLE_POLICY_TEXT")]
    pub lifecycle_policy: Option<String>,

    /// Also re-apply these settings to existing repositories that drifted
    #[arg(long, env = "PRIVATIZE_RECONCILE_REPOSITORIES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub reconcile_repositories: bool,
}

/// What follows an image besides its own manifests and blobs.
#[derive(Debug, Clone, Args)]
pub struct ReferrerArgs {
    /// Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign's sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways
    #[arg(long, env = "PRIVATIZE_COPY_REFERRERS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub copy_referrers: bool,

    /// Fail an image's copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)
    #[arg(long, env = "PRIVATIZE_REQUIRE_REFERRERS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub require_referrers: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    Mutable,
    Immutable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Bars when stderr is a terminal, log lines otherwise
    Auto,
    /// Always draw bars
    Always,
    /// Never draw bars
    Never,
}

/// `privatize sync-image SOURCE... [--to REGISTRY[/PREFIX] | --target REF]`
#[derive(Debug, Clone, Args)]
pub struct SyncImageArgs {
    /// Source image references (`nginx`, `quay.io/org/app:1.2`, `ghcr.io/x/y@sha256:…`)
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,

    /// Target registry with an optional path prefix: REGISTRY[/PREFIX]. Each source goes to `<REGISTRY>/<PREFIX>/<source-host>/<path>`
    #[arg(long, env = "ECR_REGISTRY")]
    pub to: Option<String>,

    /// Exact target reference (one source only), instead of the naming rule; wins over ECR_REGISTRY
    #[arg(long)]
    pub target: Option<String>,

    /// Blobs transferred at once
    #[arg(long, env = "PRIVATIZE_JOBS", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,

    /// Attempts for each transfer on transient failures (connection reset, 429, 5xx)
    #[arg(long, env = "PRIVATIZE_RETRIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub retries: u32,

    /// Copy only these platforms (OS/ARCH[/VARIANT], comma-separated); refused for digest-pinned sources
    #[arg(long, env = "PRIVATIZE_PLATFORMS", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Print the SOURCE -> TARGET mapping only: no network, no credentials
    #[arg(long)]
    pub dry_run: bool,

    /// Result format on stdout
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Progress bars
    #[arg(long, env = "PRIVATIZE_PROGRESS", value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,

    #[command(flatten)]
    pub transport: TransportArgs,

    #[command(flatten)]
    pub repository: RepositoryArgs,

    #[command(flatten)]
    pub referrers: ReferrerArgs,

    /// When every image is copied, write one line of counts to FILE (`images=N referrers_copied=N referrers_skipped=N`); copy Jobs write it to their termination message, which serve reads for its metrics
    #[arg(long, env = "PRIVATIZE_SUMMARY_FILE", value_name = "FILE")]
    pub summary_file: Option<std::path::PathBuf>,
}

/// `privatize refresh-secrets`
#[derive(Debug, Clone, Args)]
pub struct RefreshSecretsArgs {
    /// Refresh credentials that expire within this duration (e.g. `6h`, `90m`, `1h 30m`)
    #[arg(long, env = "PRIVATIZE_REFRESH_BEFORE", default_value = "6h", value_parser = humantime::parse_duration)]
    pub refresh_before: std::time::Duration,

    /// Refresh every managed Secret, whatever its expiry
    #[arg(long)]
    pub force: bool,

    /// First create the managed pull Secret in every enabled namespace that lacks one
    #[arg(long, env = "PRIVATIZE_ENSURE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub ensure: bool,

    /// Name of the managed pull Secret created by --ensure
    #[arg(
        long,
        env = "PRIVATIZE_PULL_SECRET_NAME",
        default_value = "privatize-ecr"
    )]
    pub pull_secret_name: String,

    /// Only these namespaces (comma-separated or repeated) [default: every enabled namespace]
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Secrets refreshed at once
    #[arg(long, env = "PRIVATIZE_REFRESH_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// How long to wait, per Secret, for serve to write the fresh login after it was asked to (serve writes within about a second)
    #[arg(long, env = "PRIVATIZE_REFRESH_WAIT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub wait: std::time::Duration,

    /// Summary format on stdout
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `privatize gen-certs`
#[derive(Debug, Clone, Args)]
pub struct GenCertsArgs {
    /// Service name the certificate is for
    #[arg(long, env = "PRIVATIZE_SERVICE", default_value = "privatize")]
    pub service: String,

    /// Namespace of the service
    #[arg(long, env = "PRIVATIZE_NAMESPACE", default_value = "privatize")]
    pub namespace: String,

    /// Extra subject alternative name (DNS name or IP; repeatable)
    #[arg(long = "san")]
    pub sans: Vec<String>,

    /// Write ca.crt, tls.crt and tls.key into this directory
    #[arg(long)]
    pub out_dir: Option<PathBuf>,

    /// Write a kubernetes.io/tls Secret of this name in --namespace
    #[arg(long)]
    pub secret: Option<String>,

    /// Patch caBundle of every webhook in this MutatingWebhookConfiguration
    #[arg(long)]
    pub webhook_config: Option<String>,

    /// Rotate even when the current certificate is still valid
    #[arg(long)]
    pub force: bool,
}

/// `privatize install`
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Print the manifests as YAML instead of applying them
    #[arg(long)]
    pub dry_run: bool,

    /// Namespace to install into
    #[arg(long, env = "PRIVATIZE_NAMESPACE", default_value = "privatize")]
    pub namespace: String,

    /// Container image for the server, the Jobs and the CronJob
    #[arg(long, env = "PRIVATIZE_IMAGE", default_value = concat!("ghcr.io/privatize/privatize:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// Register this base URL for the webhooks instead of the Service (out-of-cluster development); its host joins the certificate's SANs
    #[arg(long)]
    pub webhook_url: Option<String>,

    /// Target registry the webhook mirrors into: REGISTRY[/PREFIX]
    #[arg(long = "target-registry", env = "ECR_REGISTRY")]
    pub target_registry: Option<String>,

    /// Annotation KEY=VALUE on serve's ServiceAccount privatize-webhook (repeatable): its AWS identity, pull-only on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-webhook` for IRSA (EKS Pod Identity needs no annotation); see --iam-policies
    #[arg(long = "webhook-service-account-annotation", value_name = "KEY=VALUE", value_parser = annotation)]
    pub webhook_service_account_annotations: Vec<(String, String)>,

    /// Annotation KEY=VALUE on the copy Jobs' ServiceAccount privatize (repeatable): their AWS identity, push and repository creation on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-copy-job`; serve never passes its own identity to them
    #[arg(long = "copy-job-service-account-annotation", value_name = "KEY=VALUE", value_parser = annotation)]
    pub copy_job_service_account_annotations: Vec<(String, String)>,

    /// Annotation KEY=VALUE on the refresh CronJob's ServiceAccount privatize-refresh (repeatable); refresh-secrets calls no AWS API, so it needs no role
    #[arg(long = "refresh-service-account-annotation", value_name = "KEY=VALUE", value_parser = annotation)]
    pub refresh_service_account_annotations: Vec<(String, String)>,

    /// Removed (it put one identity, push rights included, on every account): refused, naming the three flags above
    #[arg(
        long = "service-account-annotation",
        value_name = "KEY=VALUE",
        hide = true
    )]
    pub service_account_annotations: Vec<String>,

    /// Print the minimal IAM policies (JSON) of serve, the copy Jobs and the refresh CronJob for --target-registry (an ECR host, with its prefix) and --kms-key; contacts no cluster
    #[arg(long, conflicts_with = "dry_run")]
    pub iam_policies: bool,

    /// KMS key (ARN, key ID or alias) new ECR repositories are encrypted with: set on serve, which passes it to the copy Jobs, and allowed to the copy Jobs by --iam-policies [default: AES256]
    #[arg(long, env = "PRIVATIZE_KMS_KEY")]
    pub kms_key: Option<String>,

    /// A kubernetes.io/dockerconfigjson Secret in --namespace that every copy Job mounts as its DOCKER_CONFIG: credentials for private sources and Docker Hub rate limits (create it yourself)
    #[arg(long, env = "PRIVATIZE_SOURCE_CREDENTIALS_SECRET")]
    pub source_credentials_secret: Option<String>,

    /// Partial pod spec (YAML or JSON) merged into every copy Job's pod, validated here and stored in a ConfigMap serve mounts (see `serve --copy-job-pod-template`)
    #[arg(long, env = "PRIVATIZE_COPY_JOB_POD_TEMPLATE", value_name = "FILE")]
    pub copy_job_pod_template: Option<PathBuf>,

    /// PEM file of extra CA certificates for registries (repeatable): stored in the ConfigMap privatize-ca that serve and every copy Job mount
    #[arg(long = "ca-file", env = "PRIVATIZE_CA_FILE", value_delimiter = ',')]
    pub ca_files: Vec<PathBuf>,

    /// Replicas of the webhook server; 0 runs none in the cluster (serve runs elsewhere, registered with --webhook-url)
    #[arg(long, env = "PRIVATIZE_REPLICAS", default_value_t = 2)]
    pub replicas: u16,

    /// Namespaces (comma-separated) where privatize may read and write managed pull Secrets: each gets a RoleBinding of the ClusterRole privatize-credentials; `*` binds it cluster-wide instead. Elsewhere no privatize account can read or write a Secret [default: none]
    #[arg(long, env = "PRIVATIZE_CREDENTIAL_NAMESPACES", value_delimiter = ',')]
    pub credential_namespaces: Vec<String>,

    /// Namespaces (globs, comma-separated) whose pods serve never rewrites; the install namespace is always added. Entries without glob characters are also left out of the pod webhook's namespaceSelector, so the apiserver does not call serve for them [default: kube-system]
    #[arg(long, env = "PRIVATIZE_EXCLUDE_NAMESPACES", value_delimiter = ',')]
    pub exclude_namespaces: Vec<String>,

    /// Platforms serve's copy Jobs copy of a multi-platform tag (serve's `--platforms`, set on its container when not `all`): `all`, `auto` (the cluster's nodes' platforms: only then does serve's ClusterRole get `list` and `watch` on nodes) or OS/ARCH[/VARIANT],...
    #[arg(long, env = "PRIVATIZE_PLATFORMS", default_value = "all", value_parser = platforms)]
    pub platforms: String,

    /// Env var KEY=VALUE of serve's container (repeatable): a `serve` setting by its env name (see `serve --help`), or an AWS setting such as AWS_REGION or AWS_ENDPOINT_URL (region, endpoint, STS, FIPS, dual-stack and retry settings reach the copy Jobs too; identity variables never do). Names install sets itself are refused, naming the flag that sets them
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = annotation)]
    pub env: Vec<(String, String)>,

    /// A Secret in --namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and an optional AWS_SESSION_TOKEN): serve's own AWS keys outside AWS, pull-only. Never passed to the copy Jobs: give them theirs with --copy-job-pod-template
    #[arg(long, value_name = "SECRET")]
    pub aws_credentials_secret: Option<String>,

    /// Do not wait for the Deployment to become available
    #[arg(long)]
    pub no_wait: bool,

    /// Seconds to wait for the Deployment to become available
    #[arg(long, default_value_t = 300)]
    pub wait_timeout: u64,
}

/// A Kubernetes annotation `KEY=VALUE` (the value may hold `=`; the key may not be empty).
fn annotation(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err("expected KEY=VALUE".to_string()),
    }
}

/// A `--platforms` value as serve parses it (`serve::parse_platforms`),
/// returned trimmed (`all` when it names none), so what is rendered is what
/// was given.
fn platforms(text: &str) -> Result<String, String> {
    Ok(match serve::parse_platforms(text)? {
        Platforms::All => "all".to_string(),
        _ => text.trim().to_string(),
    })
}

/// `privatize uninstall`
#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Namespace privatize was installed into
    #[arg(long, env = "PRIVATIZE_NAMESPACE", default_value = "privatize")]
    pub namespace: String,

    /// Delete only the MutatingWebhookConfiguration and release the pods still gated (what the Helm chart's pre-delete hook runs)
    #[arg(long)]
    pub webhook_only: bool,

    /// Target registry the installation mirrors to, REGISTRY[/PREFIX]: gated pods' images under it are set back to their originals [default: read from serve's Deployment]
    #[arg(long = "target-registry", env = "ECR_REGISTRY")]
    pub target_registry: Option<String>,
}

/// `privatize generate`
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Directory that receives `completions/` and `man/`
    #[arg(long, default_value = ".")]
    pub out_dir: PathBuf,
}
