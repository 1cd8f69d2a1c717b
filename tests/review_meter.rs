//! The review parse's memory charge against the heap it really takes, under a
//! counting allocator: for every adversarial shape (containers, env vars,
//! labels, volumes, Secret data, untyped options) the charge is an upper bound
//! of the peak heap, and not a wasteful one. One test, so nothing else allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use k8s_openapi::api::core::v1::{Pod, Secret};
use privatize::serve::review::{parse_review, Route, Served};

struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), SeqCst) + layout.size();
        PEAK.fetch_max(now, SeqCst);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), SeqCst);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PODS: Route = Route {
    path: "/mutate/pods",
    served: Served::Pods,
};
const SECRETS: Route = Route {
    path: "/mutate/secrets",
    served: Served::Secrets,
};

/// `unit(i)` joined by commas until about `size` bytes.
fn fill(unit: impl Fn(usize) -> String, size: usize) -> String {
    let mut out = String::new();
    for i in 0.. {
        if out.len() >= size {
            break;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&unit(i));
    }
    out
}

fn review(kind: &str, object: &str, extra: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"{kind}"}},"resource":{{"group":"","version":"v1","resource":"x"}},"namespace":"ns","operation":"CREATE","userInfo":{{}}{extra},"object":{object}}}}}"#
    )
}

fn pod(meta: &str, spec: &str) -> String {
    let object = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"{meta}}},"spec":{{{spec}}}}}"#
    );
    review("Pod", &object, "")
}

fn secret(data: &str) -> String {
    let object = format!(
        r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"s"}},"type":"kubernetes.io/dockerconfigjson","data":{{{data}}}}}"#
    );
    review("Secret", &object, "")
}

/// (peak heap bytes of the parse, bytes charged)
fn measure(body: &str, route: Route) -> (usize, usize) {
    let base = NOW.load(SeqCst);
    PEAK.store(base, SeqCst);
    let charged = match route.served {
        Served::Pods => parse_review::<Pod>(body.as_bytes(), route, |_| true).map(|(_, c)| c),
        Served::Secrets => parse_review::<Secret>(body.as_bytes(), route, |_| true).map(|(_, c)| c),
    }
    .unwrap_or_else(|err| panic!("{err:?}"));
    (PEAK.load(SeqCst) - base, charged.bytes)
}

#[test]
fn the_charge_bounds_the_heap_a_parsed_review_takes_for_every_shape() {
    let kib = 1024;
    let shapes: Vec<(&str, String, Route)> = vec![
        (
            "empty containers",
            pod(
                "",
                &format!(r#""containers":[{}]"#, fill(|_| "{}".into(), 64 * kib)),
            ),
            PODS,
        ),
        (
            "containers",
            pod(
                "",
                &format!(
                    r#""containers":[{}]"#,
                    fill(|i| format!(r#"{{"name":"c{i}","image":"i"}}"#), 256 * kib)
                ),
            ),
            PODS,
        ),
        (
            "env vars",
            pod(
                "",
                &format!(
                    r#""containers":[{{"name":"c","env":[{}]}}]"#,
                    fill(|i| format!(r#"{{"name":"E{i}","value":"v"}}"#), 256 * kib)
                ),
            ),
            PODS,
        ),
        (
            "empty env vars",
            pod(
                "",
                &format!(
                    r#""containers":[{{"name":"c","env":[{}]}}]"#,
                    fill(|_| "{}".into(), 64 * kib)
                ),
            ),
            PODS,
        ),
        (
            "labels",
            pod(
                &format!(
                    r#","labels":{{{}}}"#,
                    fill(|i| format!(r#""{i}":"""#), 256 * kib)
                ),
                r#""containers":[]"#,
            ),
            PODS,
        ),
        (
            "empty volumes",
            pod(
                "",
                &format!(
                    r#""containers":[],"volumes":[{}]"#,
                    fill(|_| "{}".into(), 64 * kib)
                ),
            ),
            PODS,
        ),
        (
            "args",
            pod(
                "",
                &format!(
                    r#""containers":[{{"name":"c","args":[{}]}}]"#,
                    fill(|_| r#""a""#.into(), 256 * kib)
                ),
            ),
            PODS,
        ),
        (
            "one big annotation",
            pod(
                &format!(r#","annotations":{{"a":"{}"}}"#, "x".repeat(256 * kib)),
                r#""containers":[]"#,
            ),
            PODS,
        ),
        (
            "secret data entries",
            secret(&fill(|i| format!(r#""{i}":"""#), 256 * kib)),
            SECRETS,
        ),
        (
            "secret value",
            secret(&format!(r#""v":"{}""#, "QUFB".repeat(64 * kib))),
            SECRETS,
        ),
        (
            "untyped options",
            review(
                "Pod",
                r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[]}}"#,
                &format!(
                    r#","options":{{"a":[{}]}}"#,
                    fill(|_| r#"{"a":0}"#.into(), 256 * kib)
                ),
            ),
            PODS,
        ),
        (
            "user groups",
            review(
                "Pod",
                r#"{"apiVersion":"v1","kind":"Pod","spec":{"containers":[]}}"#,
                &format!(
                    r#","userInfo":{{"groups":[{}]}}"#,
                    fill(|_| r#""g""#.into(), 256 * kib)
                ),
            )
            .replacen(r#","userInfo":{}"#, "", 1),
            PODS,
        ),
    ];
    let mut report = String::new();
    for (name, body, route) in &shapes {
        let (peak, charged) = measure(body, *route);
        let line = format!(
            "{name}: {} bytes of JSON, heap peak {:.1}x, charged {:.1}x\n",
            body.len(),
            peak as f64 / body.len() as f64,
            charged as f64 / body.len() as f64
        );
        report.push_str(&line);
        assert!(charged >= peak, "under-charged: {line}");
        assert!(charged <= peak * 3, "charged far more than taken: {line}");
    }
    println!("{report}");
}
