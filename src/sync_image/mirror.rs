//! One image of `sync-image`: resolve, see what the target tags hold, make
//! sure the ECR repository exists, copy by digest, then move each tag only as
//! far as the source tag is now, reading it again first (`registry/copy/tags.rs`
//! decides; this file only reads, copies and pushes).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::Planned;
use crate::ecr::{self, RepositorySettings};
use crate::progress::Reporter;
use crate::registry::copy::referrers::Referrers;
use crate::registry::copy::tags::{
    after_leave, after_push, anchor_action, named_action, Left, Mutability, Next, SourceTag,
    TagAction, TagPlan,
};
use crate::registry::copy::{Copied, Copier};

/// What one image's sync left in the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// The digest the reference stands for in the target: the pinned one, or
    /// what the source tag pointed at when its target tag was moved.
    pub digest: String,
    /// Each tag this run pushed or found in place, with the digest it points at.
    pub tags: BTreeMap<String, String>,
    /// Each tag this run did not move, with the reason.
    pub left: BTreeMap<String, String>,
    /// The referrers brought along (`--copy-referrers`).
    pub referrers: Referrers,
}

/// Where the image goes: the ECR API (for the repository and its tag
/// mutability) when the target is ECR.
pub struct Destination<'a> {
    pub ecr: Option<&'a aws_sdk_ecr::Client>,
    pub settings: &'a RepositorySettings,
    /// Whether a referrer that cannot be copied fails the image (`--require-referrers`).
    pub require_referrers: bool,
}

/// Syncs one image (see the file header).
pub async fn sync_one(
    copier: &Copier,
    destination: &Destination<'_>,
    item: &Planned,
    reporter: &Reporter,
) -> Result<Synced> {
    let plan = TagPlan::new(&item.source, &item.target);
    let digest = copier.resolve(&item.source).await?;
    let mut synced = Synced {
        digest: digest.clone(),
        tags: BTreeMap::new(),
        left: BTreeMap::new(),
        referrers: Referrers::default(),
    };
    let before = if copier.filters_platforms() {
        // A filtered index has a digest of its own, not the source's: always copy.
        None
    } else {
        Some(read_before(copier, item, &plan, &digest).await?)
    };
    if let Some(before) = &before {
        let decided = before.decide(&digest, &Mutability::Mutable);
        if decided.nothing_to_push() {
            if copier.copies_referrers() {
                // In place already: its manifests are read from the target.
                let subjects = copier.manifest_digests(&item.target, &digest).await?;
                let anchored = plan.anchor(&digest).map(|_| digest.as_str());
                follow_referrers(copier, destination, item, &subjects, anchored, &mut synced)
                    .await?;
            }
            record(&mut synced, item, &decided, &digest);
            reporter.image(&item.source.to_string()).finish(
                &item.target.to_string(),
                &digest,
                None,
            );
            return Ok(synced);
        }
    }
    let mutability = match destination.ecr {
        Some(client) => {
            ecr::ensure_repository(client, &item.target.repository, destination.settings)
                .await?
                .mutability
        }
        None => Mutability::Mutable,
    };
    // A conflict already visible fails before anything is written.
    if let Some(before) = &before {
        before.decide(&digest, &mutability).fail_on_conflict()?;
    }

    let mut copy_digest = digest;
    let mut rounds = 0;
    let mut moved_named = false;
    loop {
        rounds += 1;
        let copied = copy(copier, item, &copy_digest, reporter).await?;
        if copier.copies_referrers() {
            // Before any tag moves: a tag lands with its signatures, or (when
            // they are required and one is missing) not at all.
            let mut subjects = copied.manifests.clone();
            if copied.digest != copy_digest {
                // A filtered index is a new one: nothing refers to it.
                subjects.pop();
            }
            let anchored = plan.anchor(&copied.digest).map(|_| copied.digest.as_str());
            follow_referrers(copier, destination, item, &subjects, anchored, &mut synced).await?;
        }
        if rounds == 1 {
            synced.digest = copied.digest.clone();
            if let Some(anchor) = plan.anchor(&copied.digest) {
                let now = copier.tag_digest(&item.target.at_tag(&anchor)).await?;
                match anchor_action(&anchor, &copied.digest, now.as_deref(), &mutability) {
                    TagAction::Push => copier.push_tag(&item.target, &anchor, &copied).await?,
                    TagAction::Conflict(conflict) => return Err(conflict.into()),
                    TagAction::Holds | TagAction::Leave(_) => {}
                }
                synced.tags.insert(anchor, copied.digest.clone());
            }
        }
        let Some(named) = &plan.named else {
            return Ok(synced);
        };
        // Read again right before moving the tag: the copy took time.
        let source_now = source_tag(copier, item, &plan).await?;
        let target_now = copier.tag_digest(&item.target.at_tag(named)).await?;
        let action = named_action(
            named,
            &copy_digest,
            &copied.digest,
            &source_now,
            target_now.as_deref(),
            &mutability,
        );
        let next = match action {
            TagAction::Push => {
                copier.push_tag(&item.target, named, &copied).await?;
                moved_named = true;
                synced.tags.insert(named.clone(), copied.digest.clone());
                let after = source_tag(copier, item, &plan).await?;
                after_push(named, &copy_digest, &after, rounds)
            }
            TagAction::Holds => {
                synced.tags.insert(named.clone(), copied.digest.clone());
                Next::Done
            }
            TagAction::Leave(left) => {
                let pursuing = !plan.pinned || moved_named;
                let next = after_leave(named, &left, pursuing, plan.pinned, rounds);
                if next == Next::Done {
                    leave(&mut synced, item, named, &copied.digest, &left);
                }
                next
            }
            TagAction::Conflict(conflict) => return Err(conflict.into()),
        };
        match next {
            Next::Done => break,
            Next::Follow(now) => {
                tracing::info!(
                    image = %item.source, tag = %named, from = %copy_digest, to = %now,
                    "source tag moved during the copy: copying what it points at now"
                );
                copy_digest = now;
            }
            Next::Fail(stuck) => return Err(stuck.into()),
        }
    }
    if !plan.pinned {
        // A plain reference stands for what its tag points at.
        if let Some(now) = plan.named.as_ref().and_then(|n| synced.tags.get(n)) {
            synced.digest = now.clone();
        }
    }
    Ok(synced)
}

/// Brings the referrers of `subjects` (manifests in the target) along, logs
/// what could not be, and fails when that is any and they are required.
async fn follow_referrers(
    copier: &Copier,
    destination: &Destination<'_>,
    item: &Planned,
    subjects: &[String],
    anchored: Option<&str>,
    synced: &mut Synced,
) -> Result<()> {
    let report = copier
        .copy_referrers(&item.source, &item.target, subjects, anchored)
        .await;
    for line in &report.skipped {
        tracing::warn!(
            image = %item.source, repository = %item.target.name(), skipped = %line,
            "referrer not copied: {line}"
        );
    }
    if !report.copied.is_empty() {
        tracing::info!(
            image = %item.source, repository = %item.target.name(),
            referrers = report.copied.len(), tags = ?report.tags,
            "referrers copied"
        );
    }
    let failed = destination.require_referrers && !report.skipped.is_empty();
    let lines = report.skipped.join("; ");
    let count = report.skipped.len();
    let all = &mut synced.referrers;
    all.copied.extend(report.copied);
    all.tags.extend(report.tags);
    all.skipped.extend(report.skipped);
    if failed {
        bail!(
            "{count} referrer(s) of {} not copied (--require-referrers): {lines}",
            item.source
        );
    }
    Ok(())
}

/// What the target tags (and, when it matters, the source tag) hold before the copy.
struct Before {
    anchor: Option<(String, Option<String>)>,
    named: Option<(String, Option<String>)>,
    source: SourceTag,
}

/// The tag actions decided on the facts read before the copy.
struct Decided {
    anchor: Option<(String, TagAction)>,
    named: Option<(String, TagAction)>,
}

impl Before {
    fn decide(&self, digest: &str, mutability: &Mutability) -> Decided {
        Decided {
            anchor: self.anchor.as_ref().map(|(tag, now)| {
                let action = anchor_action(tag, digest, now.as_deref(), mutability);
                (tag.clone(), action)
            }),
            named: self.named.as_ref().map(|(tag, now)| {
                let action = named_action(
                    tag,
                    digest,
                    digest,
                    &self.source,
                    now.as_deref(),
                    mutability,
                );
                (tag.clone(), action)
            }),
        }
    }
}

impl Decided {
    fn actions(&self) -> impl Iterator<Item = &TagAction> {
        self.anchor.iter().chain(&self.named).map(|(_, a)| a)
    }

    /// No tag is to be pushed, and the image is there (a tag already holds it).
    fn nothing_to_push(&self) -> bool {
        !self
            .actions()
            .any(|a| matches!(a, TagAction::Push | TagAction::Conflict(_)))
            && self.actions().any(|a| *a == TagAction::Holds)
    }

    fn fail_on_conflict(&self) -> Result<()> {
        match self.actions().find_map(|a| match a {
            TagAction::Conflict(conflict) => Some(conflict.clone()),
            _ => None,
        }) {
            Some(conflict) => Err(conflict.into()),
            None => Ok(()),
        }
    }
}

async fn read_before(
    copier: &Copier,
    item: &Planned,
    plan: &TagPlan,
    digest: &str,
) -> Result<Before> {
    let mut before = Before {
        anchor: None,
        named: None,
        source: SourceTag::Untagged,
    };
    if let Some(anchor) = plan.anchor(digest) {
        let now = copier.tag_digest(&item.target.at_tag(&anchor)).await?;
        before.anchor = Some((anchor, now));
    }
    if let Some(named) = &plan.named {
        let now = copier.tag_digest(&item.target.at_tag(named)).await?;
        before.source = if now.as_deref() == Some(digest) {
            SourceTag::Unread
        } else if plan.pinned {
            source_tag(copier, item, plan).await?
        } else if plan.source_tag.is_some() {
            // Just resolved from the tag itself.
            SourceTag::At(digest.to_string())
        } else {
            SourceTag::Untagged
        };
        before.named = Some((named.clone(), now));
    }
    Ok(before)
}

/// What the source tag points at now.
async fn source_tag(copier: &Copier, item: &Planned, plan: &TagPlan) -> Result<SourceTag> {
    let Some(tag) = &plan.source_tag else {
        return Ok(SourceTag::Untagged);
    };
    Ok(match copier.tag_digest(&item.source.at_tag(tag)).await? {
        Some(now) => SourceTag::At(now),
        None => SourceTag::Gone,
    })
}

async fn copy(
    copier: &Copier,
    item: &Planned,
    digest: &str,
    reporter: &Reporter,
) -> Result<Copied> {
    // The bar starts after the log lines before it, so they do not tear it.
    let progress = reporter.image(&item.source.to_string());
    match copier
        .copy(&item.source, digest, &item.target, &progress)
        .await
    {
        Ok(copied) => {
            progress.finish(&item.target.to_string(), &copied.digest, Some(&copied));
            Ok(copied)
        }
        Err(err) => {
            progress.abandon();
            Err(err)
        }
    }
}

/// Records the fast path's findings: tags in place, and tags left with the reason.
fn record(synced: &mut Synced, item: &Planned, decided: &Decided, digest: &str) {
    for (tag, action) in decided.anchor.iter().chain(&decided.named) {
        match action {
            TagAction::Holds => {
                synced.tags.insert(tag.clone(), digest.to_string());
            }
            TagAction::Leave(left) => leave(synced, item, tag, digest, left),
            TagAction::Push | TagAction::Conflict(_) => {}
        }
    }
}

fn leave(synced: &mut Synced, item: &Planned, tag: &str, digest: &str, left: &Left) {
    tracing::warn!(
        image = %item.source, repository = %item.target.name(), tag, digest, reason = %left,
        "tag {tag} not moved to {digest}: {left}"
    );
    synced.left.insert(tag.to_string(), left.to_string());
}
