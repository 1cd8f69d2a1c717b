//! Unit tests of the tag rules: every row of "what to push given the source
//! tag now, the target tag now and mutability".

use super::*;

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const OTHER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";

fn at(digest: &str) -> SourceTag {
    SourceTag::At(digest.to_string())
}

fn named(source_now: &SourceTag, target_now: Option<&str>, mutability: &Mutability) -> TagAction {
    named_action("v1", OLD, OLD, source_now, target_now, mutability)
}

#[test]
fn pinned_reference_plans_an_anchor_and_mirrors_the_source_tag() {
    let source = ImageRef::parse(&format!("quay.io/org/app:v1@{OLD}")).unwrap();
    let target = ImageRef::parse(&format!("reg.example/quay.io/org/app:v1@{OLD}")).unwrap();
    let plan = TagPlan::new(&source, &target);
    assert!(plan.pinned && plan.anchored);
    assert_eq!(plan.named.as_deref(), Some("v1"));
    assert_eq!(plan.source_tag.as_deref(), Some("v1"));
    assert_eq!(plan.anchor(OLD), Some(format!("sha256-{}", "1".repeat(64))));
}

#[test]
fn plain_reference_has_no_anchor_and_digest_only_no_source_tag() {
    let plain = ImageRef::parse("quay.io/org/app:v1").unwrap();
    let plan = TagPlan::new(&plain, &plain);
    assert!(!plan.pinned && !plan.anchored);
    assert_eq!(plan.anchor(OLD), None);
    assert_eq!(plan.source_tag.as_deref(), Some("v1"));

    let pinned = ImageRef::parse(&format!("quay.io/org/app@{OLD}")).unwrap();
    let plan = TagPlan::new(&pinned, &pinned);
    assert_eq!((plan.named, plan.source_tag), (None, None));
    // `--target reg/x:stable` for a digest-only source: the asked tag, no source tag to follow.
    let asked = ImageRef::parse("reg.example/x:stable").unwrap();
    let plan = TagPlan::new(&pinned, &asked);
    assert_eq!(plan.named.as_deref(), Some("stable"));
    assert_eq!(plan.source_tag, None);
}

#[test]
fn tag_moves_only_to_what_the_source_tag_is_now() {
    let m = Mutability::Mutable;
    assert_eq!(named(&at(OLD), Some(OTHER), &m), TagAction::Push);
    assert_eq!(named(&at(OLD), None, &m), TagAction::Push);
    assert_eq!(
        named(&at(NEW), Some(NEW), &m),
        TagAction::Leave(Left::SourceMoved(NEW.into())),
        "a rollback reference never moves the shared tag back"
    );
    assert_eq!(
        named(&at(NEW), None, &m),
        TagAction::Leave(Left::SourceMoved(NEW.into()))
    );
    assert_eq!(
        named(&SourceTag::Gone, None, &m),
        TagAction::Leave(Left::SourceGone)
    );
    assert_eq!(
        named(&SourceTag::Unread, Some(OTHER), &m),
        TagAction::Leave(Left::Unverified),
        "never moved on an unread source tag"
    );
    assert_eq!(
        named(&SourceTag::Untagged, Some(OTHER), &m),
        TagAction::Push
    );
}

#[test]
fn a_tag_already_at_the_digest_is_nothing_to_do_whatever_the_source() {
    for source_now in [at(OLD), at(NEW), SourceTag::Gone, SourceTag::Unread] {
        for m in [Mutability::Mutable, Mutability::Immutable] {
            assert_eq!(named(&source_now, Some(OLD), &m), TagAction::Holds);
        }
    }
    assert_eq!(
        anchor_action("sha256-1", OLD, Some(OLD), &Mutability::Immutable),
        TagAction::Holds,
        "an anchor holding its digest is no conflict"
    );
}

#[test]
fn immutable_tag_at_another_digest_is_a_conflict_naming_both_digests() {
    let action = named(&at(OLD), Some(OTHER), &Mutability::Immutable);
    let TagAction::Conflict(conflict) = action else {
        panic!("{action:?}")
    };
    assert_eq!(
        conflict.to_string(),
        format!("tag v1 holds {OTHER}, not {OLD}, and cannot be moved: the repository's tags are IMMUTABLE")
    );
    assert_eq!(
        named(&at(OLD), None, &Mutability::Immutable),
        TagAction::Push,
        "a new tag is no conflict"
    );
    assert_eq!(
        named(&at(NEW), Some(OTHER), &Mutability::Immutable),
        TagAction::Leave(Left::SourceMoved(NEW.into())),
        "a tag that is not to move conflicts with nothing"
    );
    assert!(matches!(
        anchor_action("sha256-1", OLD, Some(OTHER), &Mutability::Immutable),
        TagAction::Conflict(_)
    ));
    assert_eq!(
        anchor_action("sha256-1", OLD, Some(OTHER), &Mutability::Mutable),
        TagAction::Push
    );
}

#[test]
fn exclusion_filters_decide_per_tag() {
    let immutable_but_latest = Mutability::ImmutableExcept(vec!["latest".into(), "dev-*".into()]);
    assert!(!immutable_but_latest.is_immutable("latest"));
    assert!(!immutable_but_latest.is_immutable("dev-42"));
    assert!(immutable_but_latest.is_immutable("v1"));
    assert!(
        immutable_but_latest.is_immutable("Latest"),
        "tags are case-sensitive"
    );
    let mutable_but_releases = Mutability::MutableExcept(vec!["v*.*".into()]);
    assert!(mutable_but_releases.is_immutable("v1.2"));
    assert!(!mutable_but_releases.is_immutable("latest"));
    assert_eq!(
        named_action(
            "latest",
            OLD,
            OLD,
            &at(OLD),
            Some(OTHER),
            &immutable_but_latest
        ),
        TagAction::Push
    );
}

#[test]
fn wildcards_match_like_ecr_filters() {
    for (pattern, tag, matches) in [
        ("*", "anything", true),
        ("v1", "v1", true),
        ("v1", "v10", false),
        ("v*", "v", true),
        ("*-rc", "1.0-rc", true),
        ("*-rc", "1.0-rc1", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "acb", false),
        ("a**", "a", true),
    ] {
        assert_eq!(wildcard_match(pattern, tag), matches, "{pattern} ~ {tag}");
    }
}

#[test]
fn a_plain_tag_follows_its_source_and_a_pinned_one_is_left() {
    assert_eq!(
        after_leave("v1", &Left::SourceMoved(NEW.into()), true, false, 1),
        Next::Follow(NEW.into())
    );
    assert_eq!(
        after_leave("v1", &Left::SourceMoved(NEW.into()), false, true, 1),
        Next::Done
    );
    assert_eq!(
        after_leave("v1", &Left::SourceGone, true, false, 1),
        Next::Fail(Stuck::Gone { tag: "v1".into() })
    );
    assert_eq!(
        after_leave("v1", &Left::SourceGone, false, true, 1),
        Next::Done
    );
}

#[test]
fn a_pushed_tag_is_taken_on_when_the_source_moved_meanwhile() {
    assert_eq!(after_push("v1", OLD, &at(OLD), 1), Next::Done);
    assert_eq!(after_push("v1", OLD, &at(NEW), 1), Next::Follow(NEW.into()));
    assert_eq!(after_push("v1", OLD, &SourceTag::Gone, 1), Next::Done);
    assert_eq!(after_push("v1", OLD, &SourceTag::Untagged, 1), Next::Done);
}

#[test]
fn following_is_bounded() {
    let Next::Fail(stuck) = after_push("v1", OLD, &at(NEW), MAX_ROUNDS) else {
        panic!("must stop after {MAX_ROUNDS} rounds")
    };
    assert_eq!(
        stuck.to_string(),
        format!("source tag v1 kept moving during the copy (3 images copied, it now points at {NEW}): target tag v1 not moved")
    );
    assert_eq!(
        after_push("v1", OLD, &at(NEW), MAX_ROUNDS - 1),
        Next::Follow(NEW.into())
    );
}

#[test]
fn ecr_immutable_refusal_is_recognised() {
    let body = "{\"errors\":[{\"code\":\"TAG_INVALID\",\"message\":\"The image tag 'v1' already exists in the 'mirror/app' repository and cannot be overwritten because the repository is immutable.\"}]}\n";
    let refusal = tag_refusal(400, body).unwrap();
    assert!(refusal.immutable);
    assert_eq!(refusal.code, "TAG_INVALID");
    assert!(!refusal.to_string().contains('\n'));

    let invalid = tag_refusal(
        400,
        r#"{"errors":[{"code":"TAG_INVALID","message":"manifest tag did not match URI"}]}"#,
    )
    .unwrap();
    assert!(!invalid.immutable, "TAG_INVALID alone is not immutability");
    assert!(
        tag_refusal(
            409,
            r#"{"errors":[{"code":"TAG_IMMUTABLE","message":"tag is locked"}]}"#
        )
        .unwrap()
        .immutable
    );
}

#[test]
fn refusal_text_is_one_short_line() {
    let long = format!(
        r#"{{"errors":[{{"code":"DENIED","message":"{}\nline two"}}]}}"#,
        "x".repeat(1000)
    );
    let refusal = tag_refusal(403, &long.replace('\n', "\\n")).unwrap();
    assert!(!refusal.message.contains('\n'));
    assert!(refusal.message.chars().count() <= REFUSAL_MESSAGE_MAX + 1);
    let plain = tag_refusal(412, "<html>precondition failed</html>").unwrap();
    assert_eq!(plain.to_string(), "HTTP 412");
    assert_eq!(
        tag_refusal(500, "{}"),
        None,
        "server errors are retried, not read"
    );
    assert_eq!(tag_refusal(401, "{}"), None);
}

#[test]
fn a_refused_push_names_tag_digests_and_cause() {
    let refusal = tag_refusal(
        400,
        r#"{"errors":[{"code":"TAG_INVALID","message":"The image tag 'v1' already exists in the 'm/app' repository and cannot be overwritten because the repository is immutable."}]}"#,
    )
    .unwrap();
    let refused = TagRefused {
        tag: "v1".into(),
        wanted: NEW.into(),
        holds: Some(OLD.into()),
        refusal,
    };
    assert_eq!(
        refused.to_string(),
        format!("the registry refused to move tag v1 to {NEW} (it holds {OLD}): the tag is IMMUTABLE there (TAG_INVALID: The image tag 'v1' already exists in the 'm/app' repository and cannot be overwritten because the repository is immutable.)")
    );
}
