//! What a tenant who may create pods in one namespace can do through serve
//! (DESIGN §11), against the apiserver and the registries: a forged gate and
//! record get no copy and no release, a pod under another target is left
//! alone, a pod naming its node is admitted, a pod refused by quota leaves no
//! Job, copies wait within the caps, a private source is not mirrored for
//! another namespace, and a revert refused by an image policy still frees
//! the pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::ResourceExt;
use serde_json::json;

use super::common::front::{Action, Front};
use super::common::kube::TestNamespace;
use super::common::serve_gate::{complete_job, run_job_command, target_digest, GateServe};
use super::{
    common, copy_jobs, events, gates, image, is_released, jobs_now, jobs_when, pod, settled_jobs,
    wait_for, SERIAL,
};

/// A pod as a tenant writes it by hand: privatize's gate, label and record.
fn forged(name: &str, image: &str, original: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"privatize.io/gated": "true"},
            "annotations": {"privatize.io/original-images": json!({"app": original}).to_string()}
        },
        "spec": {
            "schedulingGates": [{"name": "privatize.io/mirror"}],
            "containers": [{"name": "app", "image": image}]
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_gate_and_record_get_no_copy_and_no_release_and_the_mirror_keeps_its_tag() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-forged").await;
    let serve = GateServe::start(&ns, &[]).await;
    let tb = common::testbed();
    // The victim's image, mirrored: its tag holds the real digest.
    let (victim, victim_digest) = tb.image("tiny");
    assert!(serve.sync(&victim).status.success());
    let victim_target = serve.target_of(&victim);
    assert_eq!(target_digest(&victim_target), victim_digest);
    // The attacker's image, recorded as the "original" of the victim's tag.
    let (attacker, attacker_digest) = tb.image("oci-single");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let poisoned = format!("{victim_target}@{attacker_digest}");
    pods.create(
        &PostParams::default(),
        &forged(
            "forged",
            &poisoned,
            &format!("{attacker}@{attacker_digest}"),
        ),
    )
    .await
    .unwrap();

    assert!(
        settled_jobs(&ns).await.is_empty(),
        "a Job was made from a pod's own record"
    );
    let now = pods.get("forged").await.unwrap();
    assert_eq!(
        gates(&now),
        ["privatize.io/mirror"],
        "serve released a gate it did not set"
    );
    assert_eq!(image(&now), poisoned);
    assert_eq!(
        target_digest(&victim_target),
        victim_digest,
        "the mirror's tag moved"
    );
    let refused = events(&ns, "forged", "MirrorRefused").await;
    assert_eq!(refused.len(), 1, "one Warning Event for the forged pod");
    let note = refused[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("privatize did not write") && note.contains("is not where"),
        "{note}"
    );
    assert_eq!(serve.metric("privatize_pods_refused_total"), 1.0);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_pod_under_another_target_is_left_gated_for_its_own_installation() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-foreign").await;
    let serve = GateServe::start(&ns, &[]).await;
    let (source, _) = common::testbed().image("tiny");
    // Another installation's prefix in the same registry, its image not there.
    let elsewhere = format!(
        "{}/elsewhere/127.0.0.1-15000/test/tiny:never",
        common::testbed().target()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &forged("foreign", &elsewhere, &source),
    )
    .await
    .unwrap();
    assert!(settled_jobs(&ns).await.is_empty());
    let now = pods.get("foreign").await.unwrap();
    assert_eq!(
        gates(&now),
        ["privatize.io/mirror"],
        "another installation's pod was released with no copy"
    );
    assert!(events(&ns, "foreign", "MirrorRefused").await.is_empty());
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_names_its_node_is_admitted_and_its_copy_starts() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-node-name").await;
    let serve = GateServe::start(&ns, &[]).await;
    let (source, _) = common::testbed().image("tiny");
    let mut debugger = pod("node-debugger", &source);
    debugger.spec.as_mut().unwrap().node_name = Some("some-node".into());
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // The apiserver refuses a scheduling gate on a pod with nodeName.
    let created = pods
        .create(&PostParams::default(), &debugger)
        .await
        .expect("a pod with nodeName and a missing image is admitted");
    assert_eq!(image(&created), source, "the exists answer: original kept");
    assert!(gates(&created).is_empty());
    assert_eq!(created.labels()["privatize.io/copy-pending"], "true");
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1);
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    wait_for(&pods, "node-debugger", "unlabelled", |p| {
        !p.labels().contains_key("privatize.io/copy-pending")
    })
    .await;
    assert_eq!(
        target_digest(&serve.target_of(&source)),
        common::testbed().image("tiny").1
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_refused_by_quota_after_the_webhook_leaves_no_copy_job() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-quota").await;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}}
    }))
    .unwrap();
    let quotas: Api<ResourceQuota> = Api::namespaced(ns.client.clone(), &ns.name);
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // No quota controller runs here: write the status it would.
    quotas
        .patch_status(
            "no-pods",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"hard": {"pods": "0"}, "used": {"pods": "0"}}})),
        )
        .await
        .unwrap();
    let serve = GateServe::start(&ns, &[]).await;
    let (source, _) = common::testbed().image("oci-index");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let refused = pods
        .create(&PostParams::default(), &pod("over-quota", &source))
        .await;
    let err = refused.expect_err("the quota refuses the pod");
    assert!(format!("{err}").contains("exceeded quota"), "{err}");
    // The webhook did see and gate it: the refusal came after the admission.
    assert_eq!(serve.metric("privatize_pods_gated_total"), 1.0);
    assert!(
        settled_jobs(&ns).await.is_empty(),
        "a refused pod left a copy Job"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_wait_within_the_caps_and_start_as_others_finish() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-caps").await;
    let serve = GateServe::start(
        &ns,
        &["--max-copy-jobs", "3", "--max-copy-jobs-per-namespace", "2"],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let images = ["tiny", "oci-single", "docker-single", "oci-index"];
    for (i, name) in images.iter().enumerate() {
        let (source, _) = common::testbed().image(name);
        pods.create(&PostParams::default(), &pod(&format!("p{i}"), &source))
            .await
            .unwrap();
    }
    let jobs = settled_jobs(&ns).await;
    assert_eq!(jobs.len(), 2, "one namespace's share is 2 of the 3 slots");
    assert!(serve.metric("privatize_copy_jobs_deferred_total") >= 2.0);
    // One copy finishes: a waiting one starts.
    assert!(run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    let now = jobs_when(&ns, "a third Job once one finished", |j| j.len() == 3).await;
    let running = now
        .iter()
        .filter(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none()
        })
        .count();
    assert_eq!(running, 2);
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_source_is_left_unchanged_outside_the_allowed_namespaces() {
    let _serial = SERIAL.lock().await;
    let tb = common::testbed();
    // A registry whose `private/` repositories refuse anonymous clients.
    let front = Front::start(tb.source(), |_, path| {
        if path.starts_with("/v2/private/") {
            Action::Answer {
                status: 401,
                headers: vec![("www-authenticate", "Basic realm=\"private\"".into())],
                body: r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                delay: Duration::ZERO,
            }
        } else {
            Action::Forward
        }
    });
    let registry = front.addr.to_string();
    let plain = format!("{registry},{}", tb.source());
    let private = format!("{registry}/private/app:1");
    let public = tb.image("tiny").0.replacen(tb.source(), &registry, 1);

    let ns = TestNamespace::new("gate-private").await;
    let serve = GateServe::start(&ns, &["--plain-http", &plain]).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("private", &private))
        .await
        .unwrap();
    assert_eq!(image(&created), private, "a private source was mirrored");
    assert!(gates(&created).is_empty());
    assert_eq!(
        serve.metric("privatize_images_skipped_total{reason=\"private-source\"}"),
        1.0
    );
    let created = pods
        .create(&PostParams::default(), &pod("public", &public))
        .await
        .unwrap();
    assert_eq!(image(&created), serve.target_of(&public));
    assert!(
        settled_jobs(&ns).await.len() == 1,
        "only the public image is copied"
    );
    drop(serve);

    // A namespace allowed private sources gets it gated and copied.
    let allowed = TestNamespace::new("gate-private-ok").await;
    let serve = GateServe::start(
        &allowed,
        &[
            "--plain-http",
            &plain,
            "--private-source-namespaces",
            &allowed.name,
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(allowed.client.clone(), &allowed.name);
    let created = pods
        .create(&PostParams::default(), &pod("private", &private))
        .await
        .unwrap();
    assert_eq!(image(&created), serve.target_of(&private));
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    assert_eq!(copy_jobs(&allowed).await.len(), 1);
    drop(serve);
}

/// A ValidatingAdmissionPolicy in `ns`: pod updates must keep every image in
/// the mirror (the policy privatize is installed for).
async fn images_from_the_mirror_only(ns: &TestNamespace, mirror: &str) -> String {
    let name = format!("mirror-only-{}", ns.name);
    let resource = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ))
    };
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]
            }]},
            "validations": [{
                "expression": format!("object.spec.containers.all(c, c.image.startsWith('{mirror}/'))"),
                "message": "images must come from the mirror"
            }]
        }
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}}
        }
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(ns.client.clone(), &resource("ValidatingAdmissionPolicy"))
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    Api::<DynamicObject>::all_with(
        ns.client.clone(),
        &resource("ValidatingAdmissionPolicyBinding"),
    )
    .create(&PostParams::default(), &binding)
    .await
    .unwrap();
    name
}

async fn delete_policy(ns: &TestNamespace, name: &str) {
    for kind in [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ] {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ));
        let _ = Api::<DynamicObject>::all_with(ns.client.clone(), &resource)
            .delete(name, &Default::default())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_refused_by_an_image_policy_removes_only_the_gate_and_says_why() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("gate-policy-refuses").await;
    // A missing image: gated only where private sources are allowed.
    let serve = GateServe::start(&ns, &["--private-source-namespaces", "*"]).await;
    let mirror = common::testbed().target().to_string();
    let policy = images_from_the_mirror_only(&ns, &mirror).await;
    let source = format!(
        "{}/test/does-not-exist:v{}",
        common::testbed().source(),
        common::unique()
    );
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("doomed", &source))
        .await
        .unwrap();
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    // The policy is in force once an update back to the source is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let dry = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        let tried = pods
            .patch(
                "doomed",
                &dry,
                &Patch::Json::<()>(
                    serde_json::from_value(json!([
                        {"op": "replace", "path": "/spec/containers/0/image", "value": source}
                    ]))
                    .unwrap(),
                ),
            )
            .await;
        if tried.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let jobs = copy_jobs(&ns).await;
    assert!(!run_job_command(&jobs[0]).status.success());
    complete_job(&ns.client, &ns.name, &jobs[0], false).await;
    let (released, _) = wait_for(&pods, "doomed", "released", is_released).await;
    assert_eq!(
        image(&released),
        serve.target_of(&source),
        "the refused images stay as mirrored"
    );
    let failed = events(&ns, "doomed", "MirrorFailed").await;
    assert_eq!(failed.len(), 1);
    let note = failed[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("was refused") && note.contains("images must come from the mirror"),
        "{note}"
    );
    assert!(jobs_now(&ns).await.len() == 1);
    delete_policy(&ns, &policy).await;
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_pinning_an_older_build_of_a_tag_does_not_roll_the_mirrors_tag_back() {
    use super::common::tags::{anchor, push_build, target_tag};
    let _serial = SERIAL.lock().await;
    let tb = common::testbed();
    let ns = TestNamespace::new("gate-rollback").await;
    let serve = GateServe::start(&ns, &[]).await;
    // v1 was built twice; the mirror follows the source: v1 is the new build there.
    let repository = format!("roll-{}/app", common::unique() % 1_000_000);
    let old = push_build(tb, "tiny", &repository, "v1");
    let new = push_build(tb, "oci-single", &repository, "v1");
    let shared = format!("{}/{repository}:v1", tb.source());
    assert!(serve.sync(&shared).status.success());
    let target = privatize::image::ImageRef::parse(&serve.target_of(&shared)).unwrap();
    assert_eq!(
        target_tag(tb, &target.repository, "v1").as_deref(),
        Some(new.as_str())
    );

    // A tenant pins the old build under the shared tag.
    let pinned = format!("{shared}@{old}");
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods
        .create(&PostParams::default(), &pod("pinned", &pinned))
        .await
        .unwrap();
    assert_eq!(gates(&created), ["privatize.io/mirror"]);
    let jobs = copy_jobs(&ns).await;
    let out = run_job_command(&jobs[0]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    complete_job(&ns.client, &ns.name, &jobs[0], true).await;
    let (released, _) = wait_for(&pods, "pinned", "released", is_released).await;
    assert_eq!(image(&released), serve.target_of(&pinned));
    assert_eq!(
        target_tag(tb, &target.repository, "v1").as_deref(),
        Some(new.as_str()),
        "the tenant rolled the shared tag back for everyone"
    );
    assert_eq!(
        target_tag(tb, &target.repository, &anchor(&old)).as_deref(),
        Some(old.as_str()),
        "the pinned build is kept under its anchor tag"
    );
    drop(serve);
}
