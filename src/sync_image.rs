//! Room: `privatize sync-image`. Plan the names, log in, sync every image
//! (`sync_image/mirror.rs`: repository, copy, tags), print what was pushed.

mod mirror;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;

use anyhow::{bail, Context, Result};
use oci_client::secrets::RegistryAuth;
use serde::Serialize;

use crate::cli::{OutputFormat, Progress, SyncImageArgs, TagMutability, TargetKind};
use crate::ecr::{self, RepositorySettings};
use crate::image::{ImageRef, TargetRegistry};
use crate::progress::Reporter;
use crate::registry::auth::{config_path, parse_creds, read_config, DockerConfig};
use crate::registry::copy::{check_platform_filter, Copier, CopyOptions};
use crate::registry::{self, Transport};
use mirror::{Destination, Synced};

/// One image to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub source: ImageRef,
    pub target: ImageRef,
}

#[derive(Serialize)]
struct Line<'a> {
    source: String,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
    /// Target tags this run pushed or found in place → the digest each points at.
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a BTreeMap<String, String>>,
    /// Target tags not moved → why.
    #[serde(skip_serializing_if = "nothing_left")]
    left: Option<&'a BTreeMap<String, String>>,
    /// Referrer manifests now in the target (signatures, attestations, SBOMs).
    #[serde(skip_serializing_if = "Option::is_none")]
    referrers: Option<usize>,
    /// Referrers not copied → why, one line each.
    #[serde(skip_serializing_if = "no_skips")]
    referrers_skipped: Option<&'a [String]>,
}

fn no_skips(skipped: &Option<&[String]>) -> bool {
    skipped.is_none_or(|skipped| skipped.is_empty())
}

fn nothing_left(left: &Option<&BTreeMap<String, String>>) -> bool {
    left.is_none_or(|left| left.is_empty())
}

/// Runs `sync-image`.
pub async fn run(args: SyncImageArgs) -> Result<()> {
    let plan = plan(&args)?;
    if args.dry_run {
        for item in &plan {
            print_line(args.output, item, None)?;
        }
        return Ok(());
    }
    for item in &plan {
        check_platform_filter(&item.source, &args.platforms)?;
    }
    let settings = repository_settings(&args)?;
    let client = registry::client(&Transport {
        ca_files: args.transport.ca_files.clone(),
        plain_http: args.transport.plain_http.clone(),
    })?;
    let docker_config = read_config(
        config_path(args.transport.authfile.as_deref()).as_deref(),
        args.transport.authfile.is_some(),
    )?;
    let target_host = plan[0].target.host.clone();
    let ecr_host = ecr::parse_ecr_host(&target_host);
    let is_ecr = match args.transport.target_kind {
        TargetKind::Ecr => true,
        TargetKind::Registry => false,
        TargetKind::Auto => ecr_host.is_some(),
    };
    let ecr_client = if is_ecr {
        let region = ecr_host.as_ref().map(|h| h.region.as_str());
        let client = ecr::client(region)
            .await
            .with_context(|| format!("ECR API for {target_host}"))?;
        Some(client)
    } else {
        None
    };

    let target_auth = match &ecr_client {
        Some(ecr_client) => {
            let token = ecr::authorization_token(ecr_client).await?;
            RegistryAuth::Basic(token.username, token.password)
        }
        None => credentials(
            &args.transport.dest_creds,
            "--dest-creds",
            &docker_config,
            &target_host,
        )?,
    };
    registry::login(&client, &plan[0].target, target_auth).await;
    for item in &plan {
        let auth = credentials(
            &args.transport.src_creds,
            "--src-creds",
            &docker_config,
            &item.source.host,
        )?;
        registry::login(&client, &item.source, auth).await;
    }

    let copier = Copier::new(
        client,
        CopyOptions {
            jobs: args.jobs.into(),
            retries: args.retries,
            platforms: args.platforms.clone(),
            referrers: args.referrers.copy_referrers,
        },
    );
    let bars = match args.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => std::io::stderr().is_terminal(),
    };
    let reporter = Reporter::new(bars);
    let destination = Destination {
        ecr: ecr_client.as_ref(),
        settings: &settings,
        require_referrers: args.referrers.require_referrers,
    };
    let mut failures = Vec::new();
    let mut summary = Summary::default();
    for item in &plan {
        let result = mirror::sync_one(&copier, &destination, item, &reporter).await;
        match result {
            Ok(synced) => {
                summary.add(&synced);
                print_line(args.output, item, Some(&synced))?
            }
            Err(err) => {
                failures.push(err.context(format!("copying {} to {}", item.source, item.target)))
            }
        }
    }
    match failures.len() {
        0 => match &args.summary_file {
            Some(path) => std::fs::write(path, summary.line())
                .with_context(|| format!("writing the summary to {}", path.display())),
            None => Ok(()),
        },
        1 if plan.len() == 1 => Err(failures.remove(0)),
        n => {
            for err in &failures {
                eprintln!("error: {err:#}");
            }
            bail!("{n} of {} images failed", plan.len())
        }
    }
}

/// What a run copied, for `--summary-file`.
#[derive(Debug, Default)]
struct Summary {
    images: usize,
    referrers_copied: usize,
    referrers_skipped: usize,
}

impl Summary {
    fn add(&mut self, synced: &Synced) {
        self.images += 1;
        self.referrers_copied += synced.referrers.copied.len();
        self.referrers_skipped += synced.referrers.skipped.len();
    }

    /// `images=N referrers_copied=N referrers_skipped=N` (what serve parses).
    fn line(&self) -> String {
        format!(
            "images={} referrers_copied={} referrers_skipped={}\n",
            self.images, self.referrers_copied, self.referrers_skipped
        )
    }
}

/// The source → target mapping for every argument (pure; no network).
pub fn plan(args: &SyncImageArgs) -> Result<Vec<Planned>> {
    let sources = args
        .sources
        .iter()
        .map(|s| ImageRef::parse(s))
        .collect::<Result<Vec<_>>>()?;
    match (&args.to, &args.target) {
        (_, Some(target)) => {
            let [source] = sources.as_slice() else {
                bail!(
                    "--target takes exactly one SOURCE ({} given)",
                    sources.len()
                )
            };
            Ok(vec![Planned {
                source: source.clone(),
                target: exact_target(target, source)?,
            }])
        }
        (Some(to), None) => {
            let registry = TargetRegistry::parse(to)?;
            Ok(sources
                .into_iter()
                .map(|source| Planned {
                    target: registry.target_reference(&source),
                    source,
                })
                .collect())
        }
        (None, None) => {
            bail!("give the target with --to REGISTRY[/PREFIX] (or ECR_REGISTRY) or --target REF")
        }
    }
}

/// `--target REF`: an exact reference; without a tag or digest it keeps the source's.
fn exact_target(text: &str, source: &ImageRef) -> Result<ImageRef> {
    let mut target = ImageRef::parse(text).context("parsing --target")?;
    let last = text.rsplit('/').next().unwrap_or(text);
    if !last.contains(':') && !last.contains('@') {
        target.tag = source.tag.clone();
        target.digest = source.digest.clone();
    }
    Ok(target)
}

fn credentials(
    flag: &Option<String>,
    name: &str,
    config: &DockerConfig,
    host: &str,
) -> Result<RegistryAuth> {
    if let Some(creds) = flag {
        return parse_creds(creds, name);
    }
    Ok(config.credentials(host)?.unwrap_or(RegistryAuth::Anonymous))
}

fn repository_settings(args: &SyncImageArgs) -> Result<RepositorySettings> {
    let repo = &args.repository;
    let tags = repo
        .repository_tags
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => bail!("invalid --repository-tag {t:?}: expected KEY=VALUE"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RepositorySettings {
        scan_on_push: repo.scan_on_push,
        immutable_tags: repo.tag_mutability == TagMutability::Immutable,
        kms_key: repo.kms_key.clone(),
        tags,
        policy: repo
            .repository_policy
            .clone()
            .filter(|p| !p.trim().is_empty()),
        lifecycle_policy: repo
            .lifecycle_policy
            .clone()
            .filter(|p| !p.trim().is_empty()),
        reconcile: repo.reconcile_repositories,
    })
}

fn print_line(format: OutputFormat, item: &Planned, synced: Option<&Synced>) -> Result<()> {
    let target = match synced {
        Some(synced) => pushed_reference(&item.target, synced),
        None => item.target.to_string(),
    };
    match format {
        OutputFormat::Text if synced.is_none() => println!("{} -> {target}", item.source),
        OutputFormat::Text => println!("{target}"),
        OutputFormat::Json => {
            let line = Line {
                source: item.source.to_string(),
                target,
                digest: synced.map(|s| s.digest.as_str()),
                tags: synced.map(|s| &s.tags),
                left: synced.map(|s| &s.left),
                referrers: synced.map(|s| s.referrers.copied.len()),
                referrers_skipped: synced.map(|s| s.referrers.skipped.as_slice()),
            };
            println!(
                "{}",
                serde_json::to_string(&line).context("writing JSON output")?
            );
        }
    }
    Ok(())
}

/// `host/repo:tag@digest` of what was pushed; the tag only when it points at the digest now.
fn pushed_reference(target: &ImageRef, synced: &Synced) -> String {
    let tag = target
        .tag
        .clone()
        .filter(|tag| synced.tags.get(tag) == Some(&synced.digest));
    ImageRef {
        tag,
        digest: Some(synced.digest.clone()),
        ..target.clone()
    }
    .to_string()
}
