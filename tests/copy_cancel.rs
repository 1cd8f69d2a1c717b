//! The copy as a library (`registry::copy::Copier`) against the testbed:
//! when one blob fails for good, the copy's other blob transfers stop with
//! it instead of retrying on behind the caller's back.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::front::{Action, Front};
use common::{prefix, testbed};
use oci_client::secrets::RegistryAuth;
use privatize::image::ImageRef;
use privatize::registry::copy::{Copier, CopyOptions};
use privatize::registry::observe::Unobserved;
use privatize::registry::{self, Transport};
use warp::http::Method;

const BLOB_UNKNOWN: &str =
    r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;

#[test]
fn after_a_blob_fails_for_good_no_request_of_that_copy_reaches_the_registry() {
    let tb = testbed();
    let (reference, _) = tb.image("oci-index");
    // The first blob asked for turns out to be gone for good (after the other
    // transfers have started); every other one answers 503 after a while, so
    // its transfer keeps retrying for as long as it lives.
    let first = AtomicBool::new(true);
    let front = Front::start(tb.source(), move |method, path| {
        if method != Method::GET || !path.contains("/blobs/") {
            Action::Forward
        } else if first.swap(false, Ordering::SeqCst) {
            Action::Answer {
                status: 404,
                headers: vec![],
                body: BLOB_UNKNOWN,
                delay: Duration::from_millis(400),
            }
        } else {
            Action::Answer {
                status: 503,
                headers: vec![],
                body: "",
                delay: Duration::from_millis(300),
            }
        }
    });
    let blob_requests = || {
        front
            .seen()
            .iter()
            .filter(|s| s.path.contains("/blobs/"))
            .count()
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = registry::client(&Transport {
            ca_files: vec![PathBuf::from(&tb.env["TARGET_CA_FILE"])],
            plain_http: vec![front.addr.to_string()],
        })
        .unwrap();
        let source =
            ImageRef::parse(&reference.replacen(tb.source(), &front.addr.to_string(), 1)).unwrap();
        let target =
            ImageRef::parse(&format!("{}/{}/cancel:v1", tb.target(), prefix("cancel"))).unwrap();
        let login = RegistryAuth::Basic(
            tb.env["TARGET_USER"].clone(),
            tb.env["TARGET_PASSWORD"].clone(),
        );
        registry::login(&client, &target, login).await;
        let copier = Copier::new(
            client,
            CopyOptions {
                jobs: 16,
                retries: 10,
                platforms: vec![],
                referrers: false,
            },
        );
        let digest = copier.resolve(&source).await.unwrap();
        let err = copier
            .copy(&source, &digest, &target, &Unobserved)
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("blob unknown to registry"),
            "{err:#}"
        );
        // Requests already on their way when the copy returned may still land.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let at_return = blob_requests();
        assert!(
            at_return >= 3,
            "other blobs must have been in flight ({at_return} blob requests)"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            blob_requests(),
            at_return,
            "blob transfers of the failed copy went on after it returned"
        );
    });
}
