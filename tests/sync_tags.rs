//! A shared mirrored tag only moves to what the source tag is now (DESIGN §11,
//! issue 14 point 2): `sync-image` against the testbed registries and moto,
//! with new builds pushed to source tags before and during copies. What each
//! target tag points at is read back with curl.

mod common;

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::front::{Action, Front};
use common::tags::{anchor, create_repository, error_line, push_build, source_tag, target_tag};
use common::{assert_ok, mirrored_repository, prefix, stderr, stdout, testbed};
use serde_json::Value;
use warp::http::Method;

/// ECR's answer to a manifest PUT onto an existing tag of an immutable repository.
const ECR_TAG_INVALID: &str = r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag 'v1' already exists in the 'mirror/app' repository and cannot be overwritten because the repository is immutable."}]}"#;

/// One application repository `<prefix>/app` in the source and its mirror.
struct App {
    prefix: String,
    source_repo: String,
    target_repo: String,
}

impl App {
    fn new(test: &str) -> Self {
        let prefix = prefix(test);
        let source_repo = format!("{prefix}/app");
        let target_repo = mirrored_repository(&prefix, &source_repo);
        Self {
            prefix,
            source_repo,
            target_repo,
        }
    }

    /// `<source>/<prefix>/app:v1`
    fn plain(&self) -> String {
        format!("{}/{}:v1", testbed().source(), self.source_repo)
    }

    /// `<source>/<prefix>/app:v1@<digest>`
    fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.plain())
    }

    /// `<target>/<mirror repo>` + `rest`
    fn mirrored(&self, rest: &str) -> String {
        format!("{}/{}{rest}", testbed().target(), self.target_repo)
    }

    /// Pushes a new build (a testbed image) to the source's `v1`.
    fn build(&self, image: &str) -> String {
        push_build(testbed(), image, &self.source_repo, "v1")
    }

    fn sync(&self, args: &[&str]) -> Output {
        testbed().sync(&self.prefix, args)
    }

    fn target_tag(&self, tag: &str) -> Option<String> {
        target_tag(testbed(), &self.target_repo, tag)
    }
}

fn json_line(out: &Output) -> Value {
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object per image:\n{text}");
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn an_older_build_by_digest_does_not_roll_the_shared_tag_back() {
    let tb = testbed();
    let app = App::new("rollback");
    let old = app.build("tiny");
    assert_ok(&app.sync(&[&app.plain()]));
    let new = app.build("oci-single");
    assert_ok(&app.sync(&[&app.plain()]));
    assert_eq!(
        app.target_tag("v1"),
        Some(new.clone()),
        "a plain tag moves on"
    );

    let out = app.sync(&[
        "--output",
        "json",
        "--log-format",
        "json",
        &app.pinned(&old),
    ]);
    assert_ok(&out);
    assert_eq!(
        app.target_tag("v1"),
        Some(new.clone()),
        "v1 was rolled back to the older build"
    );
    assert_eq!(app.target_tag(&anchor(&old)), Some(old.clone()));
    assert_eq!(
        tb.target_manifest(&app.target_repo, &old).0,
        200,
        "the pod pulls the old build by digest"
    );

    let line = json_line(&out);
    assert_eq!(line["source"], app.pinned(&old));
    assert_eq!(line["digest"], old.as_str());
    assert_eq!(line["target"], app.mirrored(&format!("@{old}")));
    assert_eq!(line["tags"], serde_json::json!({ anchor(&old): old }));
    let why = format!("source tag now points at {new}");
    assert_eq!(line["left"], serde_json::json!({ "v1": why }));
    let log = stderr(&out);
    assert!(
        log.lines().any(|l| l.contains(r#""level":"WARN""#)
            && l.contains("tag v1 not moved")
            && l.contains(&why)),
        "no warning naming why v1 was not moved:\n{log}"
    );
}

#[test]
fn two_references_of_one_tag_end_at_the_source_tag_in_either_order() {
    for newer_first in [true, false] {
        let app = App::new(if newer_first { "race-new" } else { "race-old" });
        let old = app.build("tiny");
        let new = app.build("oci-single");
        let mut order = [app.pinned(&old), app.pinned(&new)];
        if newer_first {
            order.reverse();
        }
        let mut printed = Vec::new();
        for reference in &order {
            let out = app.sync(&[reference]);
            assert_ok(&out);
            printed.push(stdout(&out).trim().to_string());
        }
        assert_eq!(
            app.target_tag("v1"),
            Some(new.clone()),
            "newer first: {newer_first}"
        );
        for digest in [&old, &new] {
            assert_eq!(app.target_tag(&anchor(digest)), Some(digest.clone()));
        }
        // Text output names the tag only where it was moved.
        let old_line = app.mirrored(&format!("@{old}"));
        let new_line = app.mirrored(&format!(":v1@{new}"));
        let mut expected = vec![old_line, new_line];
        if newer_first {
            expected.reverse();
        }
        assert_eq!(printed, expected);
    }
}

#[test]
fn two_references_of_one_tag_copied_at_once_end_at_the_source_tag() {
    let tb = testbed();
    let app = App::new("race-at-once");
    let old = app.build("tiny");
    let new = app.build("oci-single");
    let to = format!("{}/{}", tb.target(), app.prefix);
    let running: Vec<_> = [app.pinned(&old), app.pinned(&new)]
        .iter()
        .map(|reference| {
            let mut cmd = tb.privatize();
            cmd.args(["sync-image", "--target-kind", "ecr", "--to", &to, reference])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for child in running {
        assert_ok(&child.wait_with_output().unwrap());
    }
    assert_eq!(app.target_tag("v1"), Some(new.clone()));
    assert_eq!(app.target_tag(&anchor(&old)), Some(old));
    assert_eq!(app.target_tag(&anchor(&new)), Some(new));
}

/// A source front that pushes `image` to `repo:v1` once, when the copy asks
/// for its first blob: a new build landing in the middle of a copy.
fn moving_front(repo: &str, image: &'static str) -> Front {
    let tb = testbed();
    let moved = AtomicBool::new(false);
    let repo = repo.to_string();
    Front::start(tb.source(), move |method, path| {
        if method == Method::GET && path.contains("/blobs/") && !moved.swap(true, Ordering::SeqCst)
        {
            push_build(tb, image, &repo, "v1");
        }
        Action::Forward
    })
}

#[test]
fn a_source_tag_that_moves_during_the_copy_is_followed_not_overwritten() {
    let tb = testbed();
    let app = App::new("moving");
    let old = app.build("tiny");
    let front = moving_front(&app.source_repo, "oci-single");
    let (out, repo) = tb.sync_via(front.addr, &app.plain(), &app.prefix);
    assert_ok(&out);
    let new = source_tag(tb, &app.source_repo, "v1").unwrap();
    assert_ne!(new, old, "the front must have pushed a new build mid-copy");
    assert_eq!(
        target_tag(tb, &repo, "v1"),
        Some(new.clone()),
        "v1 must end at what the source tag is now, not at the build the copy started with"
    );
    assert_eq!(
        stdout(&out).trim(),
        format!("{}/{repo}:v1@{new}", tb.target())
    );
    assert!(
        stderr(&out).contains("source tag moved during the copy"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pinned_copy_whose_source_tag_moves_meanwhile_leaves_the_tag() {
    let tb = testbed();
    let app = App::new("moving-pinned");
    let old = app.build("tiny");
    let front = moving_front(&app.source_repo, "oci-single");
    let (out, _) = tb.sync_via(front.addr, &app.pinned(&old), &app.prefix);
    let host = front.addr.to_string().replace(':', "-");
    let repo = format!("{}/{host}/{}", app.prefix, app.source_repo);
    assert_ok(&out);
    let new = source_tag(tb, &app.source_repo, "v1").unwrap();
    assert_ne!(new, old, "the front must have pushed a new build mid-copy");
    assert_eq!(
        target_tag(tb, &repo, "v1"),
        None,
        "v1 was moved to a build the source tag had already left"
    );
    assert_eq!(target_tag(tb, &repo, &anchor(&old)), Some(old.clone()));
    assert_eq!(stdout(&out).trim(), format!("{}/{repo}@{old}", tb.target()));
    assert!(
        stderr(&out).contains(&format!("source tag now points at {new}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_pinned_copy_that_moved_the_tag_takes_it_on_when_the_source_moves_right_after() {
    let tb = testbed();
    let app = App::new("moved-after");
    let old = app.build("tiny");
    // The new build lands at the first look at the source tag once the
    // target's v1 exists: just after this copy moved it.
    let target_repo = Arc::new(OnceLock::<String>::new());
    let (repo_seen, source_repo) = (target_repo.clone(), app.source_repo.clone());
    let moved = AtomicBool::new(false);
    let front = Front::start(tb.source(), move |_, path| {
        let looks_at_tag = path.ends_with("/manifests/v1");
        if looks_at_tag && !moved.load(Ordering::SeqCst) {
            let landed = repo_seen
                .get()
                .is_some_and(|repo| target_tag(tb, repo, "v1").is_some());
            if landed && !moved.swap(true, Ordering::SeqCst) {
                push_build(tb, "oci-single", &source_repo, "v1");
            }
        }
        Action::Forward
    });
    let host = front.addr.to_string().replace(':', "-");
    let repo = format!("{}/{host}/{}", app.prefix, app.source_repo);
    target_repo.set(repo.clone()).unwrap();
    let mut cmd = tb.privatize();
    cmd.env("PRIVATIZE_PLAIN_HTTP", front.addr.to_string())
        .args([
            "sync-image",
            "--target-kind",
            "ecr",
            "--output",
            "json",
            "--to",
            &format!("{}/{}", tb.target(), app.prefix),
            &app.pinned(&old)
                .replacen(tb.source(), &front.addr.to_string(), 1),
        ]);
    let out = cmd.output().unwrap();
    assert_ok(&out);
    let new = source_tag(tb, &app.source_repo, "v1").unwrap();
    assert_ne!(
        new, old,
        "the front must have pushed a new build after the tag moved"
    );
    assert_eq!(
        target_tag(tb, &repo, "v1"),
        Some(new.clone()),
        "the copy left v1 behind the source tag"
    );
    assert_eq!(target_tag(tb, &repo, &anchor(&old)), Some(old.clone()));
    let line = json_line(&out);
    assert_eq!(line["digest"], old.as_str());
    assert_eq!(
        line["tags"],
        serde_json::json!({ anchor(&old): old, "v1": new })
    );
}

#[test]
fn an_immutable_tag_at_another_digest_fails_naming_tag_digests_and_cause() {
    let tb = testbed();
    let app = App::new("immutable");
    create_repository(tb, &app.target_repo, "IMMUTABLE");
    let old = app.build("tiny");
    assert_ok(&app.sync(&[&app.plain()]));
    let new = app.build("oci-single");

    for reference in [app.pinned(&new), app.plain()] {
        let out = app.sync(&["--log-format", "json", &reference]);
        assert!(!out.status.success(), "{reference}: {}", stderr(&out));
        let rest = if reference.contains('@') {
            format!(":v1@{new}")
        } else {
            ":v1".to_string()
        };
        let target = app.mirrored(&rest);
        let (last, errors) = error_line(&stderr(&out));
        assert_eq!(
            last,
            format!(
                "error: copying {reference} to {target}: tag v1 holds {old}, not {new}, and cannot be moved: the repository's tags are IMMUTABLE"
            )
        );
        assert_eq!(errors, 1, "the error is printed once:\n{}", stderr(&out));
    }
    assert_eq!(
        app.target_tag("v1"),
        Some(old),
        "the tag stays where it was"
    );
    assert_eq!(
        tb.target_manifest(&app.target_repo, &new).0,
        404,
        "a conflict seen before the copy writes nothing"
    );
}

#[test]
fn under_immutable_tags_anchors_and_tags_in_place_are_no_conflict() {
    let tb = testbed();
    let app = App::new("immutable-ok");
    let old = app.build("tiny");
    let new = app.build("oci-single");
    let digest_only = format!("{}/{}@{old}", tb.source(), app.source_repo);
    // The repository is made IMMUTABLE by sync-image itself here.
    assert_ok(&app.sync(&["--tag-mutability", "IMMUTABLE", &digest_only]));
    assert_eq!(app.target_tag(&anchor(&old)), Some(old.clone()));

    // The anchor already holds its digest; v1 is not to move (the source is at `new`).
    let out = app.sync(&[&app.pinned(&old)]);
    assert_ok(&out);
    assert_eq!(app.target_tag("v1"), None, "v1 moved to an older build");

    assert_ok(&app.sync(&[&app.pinned(&new)]));
    assert_eq!(app.target_tag("v1"), Some(new.clone()));
    assert_eq!(app.target_tag(&anchor(&new)), Some(new.clone()));
    // Every tag already at the digest: nothing is pushed (ECR refuses even a same-digest push).
    let again = app.sync(&["--log-format", "json", &app.pinned(&new)]);
    assert_ok(&again);
    assert!(
        stderr(&again).contains(r#""unchanged":true"#),
        "{}",
        stderr(&again)
    );
    assert_ok(&app.sync(&[&app.pinned(&old)]));
    assert_eq!(app.target_tag("v1"), Some(new));
}

#[test]
fn a_registry_refusing_the_tag_push_is_named_as_the_cause() {
    let tb = testbed();
    let (reference, digest) = tb.image("tiny");
    // The plain registry stands in for an immutable target through a front
    // that refuses every PUT of the tag as ECR does.
    let repo = format!("{}/app", prefix("refused"));
    let held = push_build(tb, "oci-single", &repo, "v1");
    let front = Front::start(tb.source(), |method, path| {
        if method == Method::PUT && path.ends_with("/manifests/v1") {
            Action::Answer {
                status: 400,
                headers: vec![("content-type", "application/json".to_string())],
                body: ECR_TAG_INVALID,
                delay: Duration::ZERO,
            }
        } else {
            Action::Forward
        }
    });
    let target = format!("{}/{repo}", front.addr);
    let mut cmd = tb.privatize();
    cmd.env(
        "PRIVATIZE_PLAIN_HTTP",
        format!("{},{}", tb.source(), front.addr),
    )
    .args([
        "sync-image",
        "--target-kind",
        "registry",
        "--log-format",
        "json",
        "--target",
        &format!("{target}:v1"),
        &reference,
    ]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    let (last, errors) = error_line(&stderr(&out));
    assert_eq!(
        last,
        format!(
            "error: copying {reference} to {target}:v1: pushing tag v1 of {target}: the registry refused to move tag v1 to {digest} (it holds {held}): the tag is IMMUTABLE there (TAG_INVALID: The image tag 'v1' already exists in the 'mirror/app' repository and cannot be overwritten because the repository is immutable.)"
        )
    );
    assert_eq!(errors, 1);
    assert!(
        front
            .seen()
            .iter()
            .any(|s| s.method == "PUT" && s.answered == Some(400)),
        "the front must have refused the push"
    );
    assert_eq!(source_tag(tb, &repo, "v1"), Some(held));
}
