//! Edge: the AWS ECR API. Registry login tokens (GetAuthorizationToken) and
//! repositories created with their settings, completed when a run died half-way,
//! or reconciled when they drifted, and their tag mutability as ECR reports it.

mod describe;
pub mod tokens;

use describe::describe_repository;
pub use describe::repository_mutability;

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::Region;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    Repository, Tag,
};
use aws_sdk_ecr::Client;
use base64::Engine as _;

use crate::registry::copy::tags::Mutability;

/// The tag every repository privatize creates carries.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "privatize");
/// How long ECR tokens live when the API does not say (or says something already past).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What an ECR host name says: `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`
/// or the dual-stack `<account>.dkr-ecr[-fips].<region>.on.aws`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    pub account: String,
    pub region: String,
}

/// Reads account and region from an ECR registry host; `None` for other hosts.
pub fn parse_ecr_host(host: &str) -> Option<EcrHost> {
    let host = host.to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let account = *labels.first()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let region = match labels.as_slice() {
        [_, "dkr", "ecr" | "ecr-fips", region, "amazonaws", "com"] => region,
        [_, "dkr", "ecr" | "ecr-fips", region, "amazonaws", "com", "cn"] => region,
        [_, "dkr-ecr" | "dkr-ecr-fips", region, "on", "aws"] => region,
        _ => return None,
    };
    Some(EcrHost {
        account: account.to_string(),
        region: region.to_string(),
    })
}

/// An ECR API client with credentials from the standard AWS chain. Its region is
/// `region` (read from an ECR host name) when given, else `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, else the AWS profile. Never the instance metadata
/// service: outside AWS it costs seconds of timeouts and a wall of warnings,
/// and inside AWS the ECR host name or the pod's `AWS_REGION` already says it.
pub async fn client(region: Option<&str>) -> Result<Client> {
    let region = match region {
        Some(region) => Region::new(region.to_string()),
        None => RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(ProfileFileRegionProvider::new())
            .region()
            .await
            .context(
                "no AWS region is known: set AWS_REGION (or a region in the AWS profile), \
                 or name the target by its ECR host <account>.dkr.ecr.<region>.amazonaws.com, \
                 which carries its region",
            )?,
    };
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(region)
        .load()
        .await;
    Ok(Client::new(&config))
}

/// A registry login from GetAuthorizationToken. The password never reaches a log.
#[derive(Clone)]
pub struct Token {
    pub username: String,
    pub password: String,
    /// The token's `expiresAt`, or fetch time + 12 h when the API gives none or a past one.
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Fetches a registry login token (valid for every registry the identity may use).
pub async fn authorization_token(client: &Client) -> Result<Token> {
    let fetched_at = SystemTime::now();
    let out = client
        .get_authorization_token()
        .send()
        .await
        .map_err(sdk_error)
        .context("getting an ECR authorization token")?;
    let data = out
        .authorization_data()
        .first()
        .context("getting an ECR authorization token: the answer holds no token")?;
    let encoded = data
        .authorization_token()
        .context("getting an ECR authorization token: the answer holds no token")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .context("decoding the ECR authorization token")?;
    let text = String::from_utf8(decoded).context("decoding the ECR authorization token")?;
    let (username, password) = text
        .split_once(':')
        .context("decoding the ECR authorization token: no `user:password` in it")?;
    let reported = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok());
    Ok(Token {
        username: username.to_string(),
        password: password.to_string(),
        expires_at: token_expiry(fetched_at, reported),
    })
}

/// The expiry to trust: the reported one when it is in the future, else fetch time + 12 h
/// (emulators report a fixed past date; nothing may spin on it).
pub fn token_expiry(fetched_at: SystemTime, reported: Option<SystemTime>) -> SystemTime {
    match reported {
        Some(at) if at > fetched_at => at,
        _ => fetched_at + TOKEN_LIFETIME,
    }
}

/// How new repositories are set up.
#[derive(Debug, Clone)]
pub struct RepositorySettings {
    pub scan_on_push: bool,
    pub immutable_tags: bool,
    pub kms_key: Option<String>,
    /// Tags besides `managed-by=privatize`.
    pub tags: Vec<(String, String)>,
    pub policy: Option<String>,
    pub lifecycle_policy: Option<String>,
    pub reconcile: bool,
}

/// What `ensure_repository` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Existing,
    /// Existing and managed by privatize, and these missing settings were applied.
    Completed(Vec<&'static str>),
    /// Existing, and these settings were re-applied.
    Reconciled(Vec<&'static str>),
}

/// A repository `ensure_repository` made sure of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredRepository {
    pub ensured: Ensured,
    /// Its tag mutability now (DescribeRepositories, or what it was just set to).
    pub mutability: Mutability,
}

/// Makes sure a repository exists with `settings`: a new one gets every setting or
/// the call fails; one privatize made (tag `managed-by=privatize`) gets the
/// policies it lacks (a run that died between CreateRepository and the policy
/// calls left it so); with `reconcile`, any repository gets every drifted setting.
/// Also says what the repository's tag mutability is, which decides whether a
/// tag that exists may move.
pub async fn ensure_repository(
    client: &Client,
    name: &str,
    settings: &RepositorySettings,
) -> Result<EnsuredRepository> {
    let wanted = if settings.immutable_tags {
        Mutability::Immutable
    } else {
        Mutability::Mutable
    };
    let (ensured, mutability) = match describe_repository(client, name).await? {
        None => match create_repository(client, name, settings).await? {
            // Made by another copy a moment ago, perhaps with other settings: ask.
            Ensured::Existing => {
                let raced = describe_repository(client, name).await?;
                let mutability = raced.as_ref().map_or(wanted, repository_mutability);
                (Ensured::Existing, mutability)
            }
            ensured => (ensured, wanted),
        },
        Some(repository) if settings.reconcile => {
            let ensured = reconcile_repository(client, name, &repository, settings).await?;
            let mutability = match &ensured {
                Ensured::Reconciled(fixed) if fixed.contains(&"tag-mutability") => wanted,
                _ => repository_mutability(&repository),
            };
            (ensured, mutability)
        }
        Some(repository) => (
            complete_repository(client, name, &repository, settings).await?,
            repository_mutability(&repository),
        ),
    };
    Ok(EnsuredRepository {
        ensured,
        mutability,
    })
}

async fn create_repository(
    client: &Client,
    name: &str,
    settings: &RepositorySettings,
) -> Result<Ensured> {
    let encryption = match &settings.kms_key {
        Some(key) => EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Kms)
            .kms_key(key)
            .build(),
        None => EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::Aes256)
            .build(),
    }
    .context("building the encryption configuration")?;
    let created = client
        .create_repository()
        .repository_name(name)
        .image_scanning_configuration(
            ImageScanningConfiguration::builder()
                .scan_on_push(settings.scan_on_push)
                .build(),
        )
        .image_tag_mutability(mutability(settings.immutable_tags))
        .encryption_configuration(encryption)
        .set_tags(Some(tags(settings)?))
        .send()
        .await;
    match created {
        Ok(_) => {}
        // Another copy Job created it a moment ago: that is success.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_repository_already_exists_exception()) =>
        {
            return Ok(Ensured::Existing)
        }
        Err(err) => {
            return Err(sdk_error(err)).with_context(|| format!("creating ECR repository {name}"))
        }
    }
    if let Some(policy) = &settings.policy {
        set_policy(client, name, policy).await?;
    }
    if let Some(lifecycle) = &settings.lifecycle_policy {
        set_lifecycle(client, name, lifecycle).await?;
    }
    tracing::info!(
        repository = name,
        scan_on_push = settings.scan_on_push,
        "ECR repository created"
    );
    Ok(Ensured::Created)
}

/// Applies the policies a repository privatize made lacks. Everything else is set
/// by CreateRepository itself, all or nothing; a policy that differs is drift,
/// left to `reconcile`.
async fn complete_repository(
    client: &Client,
    name: &str,
    repository: &Repository,
    settings: &RepositorySettings,
) -> Result<Ensured> {
    if settings.policy.is_none() && settings.lifecycle_policy.is_none() {
        return Ok(Ensured::Existing);
    }
    let Some(arn) = repository.repository_arn() else {
        return Ok(Ensured::Existing);
    };
    let managed = current_tags(client, name, arn)
        .await?
        .iter()
        .any(|t| t.key() == MANAGED_TAG.0 && t.value() == MANAGED_TAG.1);
    if !managed {
        return Ok(Ensured::Existing);
    }
    let mut fixed = Vec::new();
    if let Some(wanted) = &settings.policy {
        if current_policy(client, name).await?.is_none() {
            set_policy(client, name, wanted).await?;
            fixed.push("repository-policy");
        }
    }
    if let Some(wanted) = &settings.lifecycle_policy {
        if current_lifecycle(client, name).await?.is_none() {
            set_lifecycle(client, name, wanted).await?;
            fixed.push("lifecycle-policy");
        }
    }
    if fixed.is_empty() {
        return Ok(Ensured::Existing);
    }
    tracing::info!(repository = name, fixed = ?fixed, "ECR repository settings completed");
    Ok(Ensured::Completed(fixed))
}

async fn reconcile_repository(
    client: &Client,
    name: &str,
    repository: &Repository,
    settings: &RepositorySettings,
) -> Result<Ensured> {
    let mut fixed = Vec::new();
    if repository
        .image_scanning_configuration()
        .map(|c| c.scan_on_push())
        != Some(settings.scan_on_push)
    {
        client
            .put_image_scanning_configuration()
            .repository_name(name)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(settings.scan_on_push)
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("setting scan on push of ECR repository {name}"))?;
        fixed.push("scan-on-push");
    }
    if repository.image_tag_mutability() != Some(&mutability(settings.immutable_tags)) {
        client
            .put_image_tag_mutability()
            .repository_name(name)
            .image_tag_mutability(mutability(settings.immutable_tags))
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("setting tag mutability of ECR repository {name}"))?;
        fixed.push("tag-mutability");
    }
    if let Some(wanted) = &settings.policy {
        let current = current_policy(client, name).await?;
        if !same_json(current.as_deref(), wanted) {
            set_policy(client, name, wanted).await?;
            fixed.push("repository-policy");
        }
    }
    if let Some(wanted) = &settings.lifecycle_policy {
        let current = current_lifecycle(client, name).await?;
        if !same_json(current.as_deref(), wanted) {
            set_lifecycle(client, name, wanted).await?;
            fixed.push("lifecycle-policy");
        }
    }
    if let Some(arn) = repository.repository_arn() {
        let current = current_tags(client, name, arn).await?;
        let wanted = tags(settings)?;
        let missing: Vec<Tag> = wanted
            .into_iter()
            .filter(|w| {
                !current
                    .iter()
                    .any(|c| c.key() == w.key() && c.value() == w.value())
            })
            .collect();
        if !missing.is_empty() {
            client
                .tag_resource()
                .resource_arn(arn)
                .set_tags(Some(missing))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("tagging ECR repository {name}"))?;
            fixed.push("tags");
        }
    }
    if fixed.is_empty() {
        return Ok(Ensured::Existing);
    }
    tracing::info!(repository = name, fixed = ?fixed, "ECR repository settings reconciled");
    Ok(Ensured::Reconciled(fixed))
}

/// The repository policy, `None` when it has none.
async fn current_policy(client: &Client, name: &str) -> Result<Option<String>> {
    match client
        .get_repository_policy()
        .repository_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out.policy_text().map(str::to_string)),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_repository_policy_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(sdk_error(err))
            .with_context(|| format!("reading the policy of ECR repository {name}")),
    }
}

/// The lifecycle policy, `None` when it has none.
async fn current_lifecycle(client: &Client, name: &str) -> Result<Option<String>> {
    match client
        .get_lifecycle_policy()
        .repository_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_string)),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_lifecycle_policy_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(sdk_error(err))
            .with_context(|| format!("reading the lifecycle policy of ECR repository {name}")),
    }
}

async fn current_tags(client: &Client, name: &str, arn: &str) -> Result<Vec<Tag>> {
    let out = client
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("listing tags of ECR repository {name}"))?;
    Ok(out.tags().to_vec())
}

async fn set_policy(client: &Client, name: &str, policy: &str) -> Result<()> {
    client
        .set_repository_policy()
        .repository_name(name)
        .policy_text(policy)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("setting the policy of ECR repository {name}"))?;
    Ok(())
}

async fn set_lifecycle(client: &Client, name: &str, policy: &str) -> Result<()> {
    client
        .put_lifecycle_policy()
        .repository_name(name)
        .lifecycle_policy_text(policy)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("setting the lifecycle policy of ECR repository {name}"))?;
    Ok(())
}

/// An SDK error with its whole cause chain on one line (the SDK's own
/// Display says only "service error", and its `DisplayErrorContext` ends with
/// a multi-kilobyte `Debug` dump). Causes that repeat their parent are skipped.
fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cause = current.source();
    }
    anyhow::anyhow!("{}", parts.join(": "))
}

fn mutability(immutable: bool) -> ImageTagMutability {
    if immutable {
        ImageTagMutability::Immutable
    } else {
        ImageTagMutability::Mutable
    }
}

fn tags(settings: &RepositorySettings) -> Result<Vec<Tag>> {
    std::iter::once((MANAGED_TAG.0.to_string(), MANAGED_TAG.1.to_string()))
        .chain(settings.tags.iter().cloned())
        .map(|(key, value)| {
            Tag::builder()
                .key(key)
                .value(value)
                .build()
                .context("building a repository tag")
        })
        .collect()
}

/// JSON documents compared by meaning, not by whitespace.
fn same_json(current: Option<&str>, wanted: &str) -> bool {
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
    match (current.and_then(parse), parse(wanted)) {
        (Some(a), Some(b)) => a == b,
        _ => current == Some(wanted),
    }
}
