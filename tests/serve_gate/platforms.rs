//! Platforms by what the cluster runs (`--platforms auto`): the copy Job of
//! a tag copies the platforms of the cluster's Nodes only, a digest-pinned
//! reference every platform; the filtered mirror is no drift from its
//! source; and a Node of a new platform gets the tag in use copied again
//! with that platform added (never one dropped).

use k8s_openapi::api::core::v1::Node;
use kube::api::DeleteParams;

use super::*;

/// Marks the Nodes this test makes (leftovers of an earlier run are removed first).
const NODE_LABEL: &str = "privatize.test/platforms";

async fn add_node(ns: &TestNamespace, name: &str, arch: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            NODE_LABEL: "true",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
        }},
    }))
    .unwrap();
    Api::<Node>::all(ns.client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating Node {name}: {e}"));
}

async fn remove_nodes(ns: &TestNamespace) {
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let ours = nodes
        .list(&ListParams::default().labels(&format!("{NODE_LABEL}=true")))
        .await
        .unwrap();
    for node in ours {
        let _ = nodes
            .delete(&node.name_any(), &DeleteParams::default())
            .await;
    }
}

/// The `PRIVATIZE_PLATFORMS` a copy Job gives its copy, if any.
fn job_platforms(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PRIVATIZE_PLATFORMS")
        .and_then(|e| e.value.clone())
}

/// The `os/arch` of every image entry of the index `reference` names in the
/// target, and what it says it was filtered from.
fn mirrored_platforms(reference: &str) -> (Vec<String>, Option<String>) {
    let tb = common::testbed();
    let image = privatize::image::ImageRef::parse(reference).unwrap();
    let at = image
        .digest
        .clone()
        .or(image.tag.clone())
        .unwrap_or_default();
    let (status, bytes) = tb.target_manifest(&image.repository, &at);
    assert_eq!(status, 200, "{reference}");
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let mut platforms: Vec<String> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    platforms.sort();
    let from = doc["annotations"]["io.privatize.filtered-from"]
        .as_str()
        .map(str::to_string);
    (platforms, from)
}

/// Runs a copy Job's command, checks it exited 0 and marks the Job complete.
async fn run_to_completion(ns: &TestNamespace, job: &Job) {
    let out = run_job_command(job);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    complete_job(&ns.client, &ns.name, job, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_auto_a_tag_gets_the_nodes_platforms_and_a_new_nodes_platform_later() {
    let _serial = SERIAL.lock().await;
    let ns = TestNamespace::new("platforms").await;
    remove_nodes(&ns).await;
    add_node(&ns, &format!("amd64-{}", common::unique()), "amd64").await;
    let serve = GateServe::start(
        &ns,
        &["--platforms", "auto", "--tag-recheck-interval", "2s"],
    )
    .await;
    let tb = common::testbed();
    // test/oci-index:v1 (linux/amd64, linux/arm64, linux/s390x) under a tag of its own.
    let (index, digest) = tb.image("oci-index");
    let prefix = common::prefix("platforms");
    let source = format!("{}/{prefix}/app:v1", tb.source());
    let out = tb
        .privatize()
        .args(["sync-image", &index, "--target", &source])
        .args(["--target-kind", "registry", "--copy-referrers=false"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let target = serve.target_of(&source);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    // The watch has listed the Node by the time serve is ready, nearly
    // always; the Job of a pod admitted before would copy every platform.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A tag: gated, and its Job copies the nodes' one platform.
    pods.create(&PostParams::default(), &pod("first", &source))
        .await
        .unwrap();
    let jobs = copy_jobs(&ns).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(job_platforms(&jobs[0]).as_deref(), Some("linux/amd64"));
    run_to_completion(&ns, &jobs[0]).await;
    wait_for(&pods, "first", "released", is_released).await;
    assert_eq!(
        mirrored_platforms(&target),
        (vec!["linux/amd64".to_string()], Some(digest.clone())),
        "the mirror holds the nodes' platform and names the index it came from"
    );

    // The filtered mirror is the source's tag: no drift, for a pod admitted
    // after the source tag was read again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pods.create(&PostParams::default(), &pod("second", &source))
        .await
        .unwrap();
    let second = pods.get("second").await.unwrap();
    assert_eq!(image(&second), target);
    assert!(gates(&second).is_empty(), "present: not gated");
    assert_eq!(
        serve.metric("privatize_tags_drifted_total{done=\"warned\"}"),
        0.0,
        "{}",
        serve.log()
    );

    // A pinned reference: every platform, whatever the nodes.
    let pinned = format!("{source}@{digest}");
    pods.create(&PostParams::default(), &pod("pinned", &pinned))
        .await
        .unwrap();
    let jobs = jobs_when(&ns, "the pinned copy's Job", |jobs| jobs.len() == 2).await;
    let pinned_job = jobs.iter().find(|j| source_of(j) == pinned).unwrap();
    assert_eq!(
        job_platforms(pinned_job),
        None,
        "a pinned copy was filtered"
    );

    // An arm64 node joins: the tag in use is copied again with arm64 added.
    add_node(&ns, &format!("arm64-{}", common::unique()), "arm64").await;
    let jobs = jobs_when(&ns, "the Job that adds arm64", |jobs| {
        jobs.iter()
            .any(|j| job_platforms(j).as_deref() == Some("linux/amd64,linux/arm64"))
    })
    .await;
    let widen = jobs
        .iter()
        .find(|j| job_platforms(j).as_deref() == Some("linux/amd64,linux/arm64"))
        .unwrap();
    run_to_completion(&ns, widen).await;
    assert_eq!(
        mirrored_platforms(&target),
        (
            vec!["linux/amd64".to_string(), "linux/arm64".to_string()],
            Some(digest.clone())
        )
    );
    assert!(serve
        .log()
        .contains("the mirror's tag lacks a platform of the cluster's nodes"));
    // Once: later passes start no other Job for it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let widened: Vec<_> = jobs_now(&ns)
        .await
        .into_iter()
        .filter(|j| job_platforms(j).is_some_and(|p| p.contains("arm64")))
        .collect();
    assert_eq!(
        widened.len(),
        1,
        "{:?}",
        widened.iter().map(job_platforms).collect::<Vec<_>>()
    );
    remove_nodes(&ns).await;
    drop(serve);
}

/// The source a copy Job copies (its `sync-image` argument).
fn source_of(job: &Job) -> String {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.containers[0].args.as_ref().unwrap()[1].clone()
}
