//! Pure parsing: manifests, ECR hosts, token expiry, docker config credentials.

use std::time::{Duration, SystemTime};

use oci_client::secrets::RegistryAuth;
use privatize::ecr::{parse_ecr_host, token_expiry, EcrHost, TOKEN_LIFETIME};
use privatize::manifest::{
    filter_platforms, index_platforms, is_distributable, platform_matches, sha256_digest, Manifest,
    Platform, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use privatize::registry::auth::{parse_creds, read_config};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn index_lists_its_children_with_platforms() {
    let Manifest::Index {
        media_type,
        manifests,
    } = Manifest::parse(&fixture("index_with_attestation.json")).unwrap()
    else {
        panic!("not an index")
    };
    assert_eq!(media_type, OCI_INDEX);
    let platforms: Vec<String> = manifests
        .iter()
        .map(|m| m.platform.as_ref().unwrap().spec())
        .collect();
    assert_eq!(
        platforms,
        ["linux/amd64", "linux/arm64/v8", "unknown/unknown"]
    );
}

#[test]
fn image_manifest_lists_config_then_layers() {
    let Manifest::Image { media_type, blobs } =
        Manifest::parse(&fixture("docker_v2s2.json")).unwrap()
    else {
        panic!("not an image")
    };
    assert_eq!(media_type, DOCKER_MANIFEST);
    assert_eq!(blobs.len(), 3);
    assert_eq!(
        blobs[0].media_type,
        "application/vnd.docker.container.image.v1+json"
    );
    assert!(blobs.iter().all(is_distributable));
}

#[test]
fn a_manifest_without_media_type_is_inferred() {
    let bytes = br#"{"schemaVersion":2,"config":{"digest":"sha256:00","size":1},"layers":[]}"#;
    assert_eq!(Manifest::parse(bytes).unwrap().media_type(), OCI_MANIFEST);
    let index = br#"{"schemaVersion":2,"manifests":[]}"#;
    assert_eq!(Manifest::parse(index).unwrap().media_type(), OCI_INDEX);
}

#[test]
fn schema1_and_garbage_are_refused_clearly() {
    let err = Manifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#).unwrap_err();
    assert!(err.to_string().contains("schema 1"), "{err:#}");
    assert!(Manifest::parse(b"{not json").is_err());
    assert!(Manifest::parse(br#"{"schemaVersion":2}"#)
        .unwrap_err()
        .to_string()
        .contains("unrecognised manifest"));
}

#[test]
fn platform_filter_keeps_the_platform_and_its_attestation() {
    let bytes = fixture("index_with_attestation.json");
    let filtered = filter_platforms(&bytes, &["linux/amd64".to_string()]).unwrap();
    let Manifest::Index { manifests, .. } = Manifest::parse(&filtered).unwrap() else {
        panic!()
    };
    assert_eq!(
        manifests.len(),
        2,
        "amd64 and the attestation that names it"
    );
    assert_ne!(sha256_digest(&filtered), sha256_digest(&bytes));
    assert!(filter_platforms(&bytes, &["windows/amd64".to_string()]).is_err());
    // The filtered index names the index it came from; the source's says nothing.
    let (platforms, from) = index_platforms(&filtered).unwrap();
    assert_eq!(platforms, ["linux/amd64"]);
    assert_eq!(from.as_deref(), Some(sha256_digest(&bytes).as_str()));
    let (platforms, from) = index_platforms(&bytes).unwrap();
    assert_eq!(
        platforms,
        ["linux/amd64", "linux/arm64/v8"],
        "no unknown/unknown"
    );
    assert_eq!(from, None);
    assert_eq!(
        index_platforms(&fixture("docker_v2s2.json")),
        None,
        "not an index"
    );
}

#[test]
fn os_arch_asks_for_every_variant_and_arm64_v8_is_arm64() {
    let bytes = fixture("index_with_attestation.json");
    let kept = |wanted: &[&str]| {
        let wanted: Vec<String> = wanted.iter().map(|w| w.to_string()).collect();
        filter_platforms(&bytes, &wanted)
            .map(|f| index_platforms(&f).unwrap().0)
            .map_err(|e| e.to_string())
    };
    // Nodes say `linux/arm64`; the index says `linux/arm64/v8`.
    assert_eq!(
        kept(&["linux/arm64"]),
        Ok(vec!["linux/arm64/v8".to_string()])
    );
    assert_eq!(
        kept(&["linux/arm64/v8"]),
        Ok(vec!["linux/arm64/v8".to_string()])
    );
    assert!(kept(&["linux/arm64/v7"]).is_err());
    assert!(kept(&["linux/arm"]).is_err(), "arm is not arm64");
    let v8 = |variant: Option<&str>| Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: variant.map(str::to_string),
    };
    assert!(platform_matches("linux/arm64/v8", &v8(None)));
    assert!(!platform_matches("linux/arm64/v9", &v8(None)));
    assert!(platform_matches("linux/arm64", &v8(Some("v9"))));
    assert!(!platform_matches("windows/arm64", &v8(None)));
}

#[test]
fn ecr_hosts_of_every_flavour_are_recognised() {
    let host = |a: &str, r: &str| {
        Some(EcrHost {
            account: a.into(),
            region: r.into(),
        })
    };
    assert_eq!(
        parse_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
        host("123456789012", "eu-west-1")
    );
    assert_eq!(
        parse_ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
        host("123456789012", "us-east-1")
    );
    assert_eq!(
        parse_ecr_host("123456789012.dkr-ecr.us-west-2.on.aws"),
        host("123456789012", "us-west-2")
    );
    assert_eq!(
        parse_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
        host("123456789012", "cn-north-1")
    );
    assert_eq!(parse_ecr_host("127.0.0.1:5000"), None);
    assert_eq!(
        parse_ecr_host("12345.dkr.ecr.eu-west-1.amazonaws.com"),
        None
    );
    assert_eq!(parse_ecr_host("quay.io"), None);
}

#[test]
fn a_past_or_missing_token_expiry_means_twelve_hours_from_fetch() {
    let now = SystemTime::now();
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_420_070_400); // 2015-01-01, as moto says
    assert_eq!(token_expiry(now, Some(past)), now + TOKEN_LIFETIME);
    assert_eq!(token_expiry(now, None), now + TOKEN_LIFETIME);
    let later = now + Duration::from_secs(3600);
    assert_eq!(token_expiry(now, Some(later)), later);
}

#[test]
fn creds_flags_split_at_the_first_colon() {
    assert_eq!(
        parse_creds("AWS:a:b", "--src-creds").unwrap(),
        RegistryAuth::Basic("AWS".into(), "a:b".into())
    );
    assert!(parse_creds("nopassword", "--src-creds")
        .unwrap_err()
        .to_string()
        .contains("--src-creds"));
}

#[test]
fn docker_config_credentials_are_found_by_host() {
    let dir = std::env::temp_dir().join(format!("privatize-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    // base64("user:p:w") and base64("hub:secret")
    std::fs::write(&path, r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dXNlcjpwOnc="},"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"other.io":{"username":"u","password":"p"}}}"#).unwrap();
    let config = read_config(Some(&path), true).unwrap();
    assert_eq!(
        config.credentials("reg.example:5000").unwrap(),
        Some(RegistryAuth::Basic("user".into(), "p:w".into()))
    );
    assert_eq!(
        config.credentials("docker.io").unwrap(),
        Some(RegistryAuth::Basic("hub".into(), "secret".into()))
    );
    assert_eq!(
        config.credentials("other.io").unwrap(),
        Some(RegistryAuth::Basic("u".into(), "p".into()))
    );
    assert_eq!(config.credentials("nowhere.io").unwrap(), None);
    assert!(
        read_config(Some(&dir.join("missing.json")), true).is_err(),
        "an explicit --authfile must exist"
    );
    assert!(
        read_config(Some(&dir.join("missing.json")), false).is_ok(),
        "the default location may be absent"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resets_429_and_5xx_are_retried_but_4xx_and_digest_errors_are_not() {
    use oci_client::errors::{DigestError, OciDistributionError};
    use privatize::registry::retry::{is_digest_mismatch, is_transient, SourceFault};
    let server = |code| {
        anyhow::Error::new(OciDistributionError::ServerError {
            code,
            url: "u".into(),
            message: String::new(),
        })
    };
    for code in [408, 429, 500, 502, 503] {
        assert!(is_transient(&server(code)), "{code}");
    }
    for code in [400, 401, 403, 404] {
        assert!(!is_transient(&server(code)), "{code}");
    }
    assert!(is_transient(
        &anyhow::Error::new(SourceFault::Io("connection reset".into())).context("pushing blob")
    ));
    let mismatch = anyhow::Error::new(SourceFault::Digest("expected a, got b".into()));
    assert!(is_digest_mismatch(&mismatch) && !is_transient(&mismatch));
    let oci = anyhow::Error::new(OciDistributionError::DigestError(
        DigestError::VerificationError {
            expected: "a".into(),
            actual: "b".into(),
        },
    ));
    assert!(!is_transient(&oci));
}
