use super::*;

fn settings() -> Settings {
    Settings {
        namespace: "mirror".into(),
        image: "registry.example/privatize:test".into(),
        webhook_url: None,
        target_registry: None,
        annotations: AccountAnnotations::default(),
        kms_key: None,
        source_credentials_secret: None,
        ca_bundle: None,
        replicas: 2,
        copy_job_pod_template: None,
        registry_ca: None,
        credential_namespaces: Vec::new(),
        server_env: Vec::new(),
        aws_credentials_secret: None,
        exclude_namespaces: vec!["kube-system".into(), "mirror".into()],
        platforms: "all".into(),
    }
}

fn names(objects: &[Object]) -> Vec<String> {
    objects.iter().map(Object::describe).collect()
}

#[test]
fn install_and_uninstall_find_objects_by_kind_and_name_in_any_order() {
    let rendered = objects(&settings()).unwrap();
    let secret =
        k8s::tls_secret("mirror", TLS_SECRET, &tls::issue(&["x".into()]).unwrap()).unwrap();
    let expected = Parts::of(rendered.clone(), "mirror")
        .unwrap()
        .uninstall_order(secret.clone(), false);
    let mut shuffled = rendered.clone();
    shuffled.reverse();
    shuffled.rotate_left(5);
    let parts = Parts::of(shuffled, "mirror").unwrap();
    assert!(parts.namespace.is::<Namespace>("mirror"));
    assert!(parts.webhooks.is::<MutatingWebhookConfiguration>(NAME));
    assert_eq!(parts.rest.len(), rendered.len() - 2);
    let order = parts.uninstall_order(secret.clone(), false);
    assert_eq!(order.len(), expected.len());
    assert_eq!(
        order.first().map(Object::describe).as_deref(),
        Some("MutatingWebhookConfiguration/privatize")
    );
    assert_eq!(
        order.last().map(Object::describe).as_deref(),
        Some("Namespace/mirror")
    );
    let mut sorted = names(&order);
    sorted.sort();
    let mut wanted = names(&expected);
    wanted.sort();
    assert_eq!(sorted, wanted, "the same objects, whatever the order");

    let mut shuffled = rendered;
    shuffled.rotate_right(3);
    let webhook_only = Parts::of(shuffled, "mirror")
        .unwrap()
        .uninstall_order(secret, true);
    assert_eq!(
        names(&webhook_only),
        ["MutatingWebhookConfiguration/privatize"]
    );
}

#[test]
fn source_credentials_secret_must_be_an_object_name() {
    for good in ["dockerhub", "docker-hub.v2", "a", &"a".repeat(253)] {
        assert!(is_object_name(good), "{good}");
    }
    for bad in [
        "",
        "Dockerhub",
        "docker_hub",
        "-hub",
        "hub-",
        "hub.",
        ".hub",
        "a..b",
        "hub/x",
        &"a".repeat(254),
    ] {
        assert!(!is_object_name(bad), "{bad}");
    }
}

fn install_args(args: &[&str]) -> InstallArgs {
    use clap::Parser;
    let argv = ["privatize", "install"].iter().chain(args);
    match crate::cli::Cli::try_parse_from(argv).unwrap().command {
        crate::cli::Command::Install(args) => args,
        _ => unreachable!("parsed `install`"),
    }
}

fn annotations_of(objects: &[Object], account: &str) -> serde_json::Value {
    let account = objects
        .iter()
        .find(|o| o.is::<k8s_openapi::api::core::v1::ServiceAccount>(account))
        .unwrap();
    serde_json::to_value(&account.object).unwrap()["metadata"]["annotations"].clone()
}

#[test]
fn each_service_account_gets_only_its_own_annotations() {
    let args = install_args(&[
        "--webhook-service-account-annotation",
        "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/pull",
        "--copy-job-service-account-annotation",
        "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/push",
        "--copy-job-service-account-annotation",
        "example.com/note=a=b",
        "--refresh-service-account-annotation",
        "example.com/owner=platform",
    ]);
    let rendered = objects(&super::settings(&args).unwrap()).unwrap();
    assert_eq!(
        annotations_of(&rendered, "privatize-webhook"),
        serde_json::json!({"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/pull"})
    );
    assert_eq!(
        annotations_of(&rendered, "privatize"),
        serde_json::json!({
            "eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/push",
            "example.com/note": "a=b"
        })
    );
    assert_eq!(
        annotations_of(&rendered, "privatize-refresh"),
        serde_json::json!({"example.com/owner": "platform"})
    );
    let none = objects(&super::settings(&install_args(&[])).unwrap()).unwrap();
    for account in ["privatize-webhook", "privatize", "privatize-refresh"] {
        assert!(annotations_of(&none, account).is_null(), "{account}");
    }
}

#[test]
fn the_old_one_for_all_annotation_flag_is_refused_naming_the_new_ones() {
    let args = install_args(&[
        "--service-account-annotation",
        "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/privatize",
    ]);
    let err = super::settings(&args).unwrap_err().to_string();
    assert_eq!(
        err,
        "--service-account-annotation is gone: it put one identity on all three accounts; use \
         --webhook-service-account-annotation (serve: pull), --copy-job-service-account-annotation \
         (copy Jobs: push) and --refresh-service-account-annotation (no AWS identity); \
         `privatize install --iam-policies` prints each role's policy"
    );
    assert!(!err.contains('\n'));
}

#[test]
fn an_annotation_without_a_key_is_a_usage_error() {
    use clap::Parser;
    let err = crate::cli::Cli::try_parse_from([
        "privatize",
        "install",
        "--copy-job-service-account-annotation",
        "=x",
    ])
    .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
}

#[test]
fn a_kms_key_reaches_serve_which_passes_it_to_the_copy_jobs() {
    let args = install_args(&["--kms-key", "alias/ecr"]);
    let rendered = objects(&super::settings(&args).unwrap()).unwrap();
    let deployment = rendered
        .iter()
        .find(|o| o.is::<k8s_openapi::api::apps::v1::Deployment>(NAME))
        .unwrap();
    let deployment = serde_json::to_value(&deployment.object).unwrap();
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "PRIVATIZE_KMS_KEY", "value": "alias/ecr"})),
        "{env}"
    );
}

#[test]
fn a_missing_object_is_an_error_not_a_wrong_pick() {
    let mut rendered = objects(&settings()).unwrap();
    rendered.retain(|o| !o.is::<MutatingWebhookConfiguration>(NAME));
    let err = Parts::of(rendered, "mirror").err().unwrap();
    assert_eq!(
        err.to_string(),
        "the manifests hold no MutatingWebhookConfiguration/privatize"
    );
}

fn server_container(s: &Settings) -> serde_json::Value {
    let deployment = objects(s)
        .unwrap()
        .into_iter()
        .find(|o| o.is::<k8s_openapi::api::apps::v1::Deployment>(NAME))
        .unwrap();
    let value = serde_json::to_value(&deployment.object).unwrap();
    value["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
fn env_and_the_aws_secret_reach_serves_container_only() {
    let mut s = settings();
    s.server_env = vec![
        ("AWS_REGION".into(), "eu-west-1".into()),
        ("PRIVATIZE_PLAIN_HTTP".into(), "198.18.0.1:15000".into()),
    ];
    s.aws_credentials_secret = Some("aws-pull-keys".into());
    let env = server_container(&s)["env"].as_array().unwrap().clone();
    let by_name = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(by_name("AWS_REGION").unwrap()["value"], "eu-west-1");
    assert_eq!(
        by_name("PRIVATIZE_PLAIN_HTTP").unwrap()["value"],
        "198.18.0.1:15000"
    );
    let key = by_name("AWS_ACCESS_KEY_ID").unwrap();
    assert_eq!(
        key["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "aws-pull-keys", "key": "AWS_ACCESS_KEY_ID"})
    );
    assert_eq!(
        by_name("AWS_SESSION_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["optional"],
        true
    );
    let rendered = serde_json::to_string(
        &objects(&s)
            .unwrap()
            .iter()
            .map(|o| &o.object)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        rendered.matches("aws-pull-keys").count(),
        3,
        "only serve's three key references name the Secret"
    );
}

#[test]
fn env_that_install_sets_itself_is_refused_naming_the_flag() {
    let owned = |name: &str| {
        server_env(&[(name.to_string(), "x".to_string())])
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        owned("ECR_REGISTRY"),
        "--env ECR_REGISTRY: install sets it; use --target-registry"
    );
    assert_eq!(
        owned("AWS_ACCESS_KEY_ID"),
        "--env AWS_ACCESS_KEY_ID: install sets it; use --aws-credentials-secret"
    );
    assert_eq!(
        owned("POD_NAME"),
        "--env POD_NAME: install sets it and it cannot be changed"
    );
    assert!(owned("1X").contains("not an environment variable name"));
    let twice = server_env(&[("A".into(), "1".into()), ("A".into(), "2".into())]).unwrap_err();
    assert_eq!(twice.to_string(), "--env A: given twice");
    assert!(server_env(&[("AWS_ENDPOINT_URL".into(), "http://198.18.0.1:15500".into())]).is_ok());
}

#[test]
fn every_env_name_install_renders_is_refused_for_env() {
    let mut s = settings();
    s.target_registry = Some("r.example/p".into());
    s.source_credentials_secret = Some("src".into());
    s.kms_key = Some("alias/k".into());
    s.copy_job_pod_template = Some("nodeSelector: {a: b}".into());
    s.registry_ca = Some("PEM".into());
    s.aws_credentials_secret = Some("keys".into());
    s.platforms = "auto".into();
    let env = server_container(&s)["env"].as_array().unwrap().clone();
    for entry in env {
        let name = entry["name"].as_str().unwrap();
        assert!(
            manifests::OWNED_ENV.iter().any(|(owned, _)| *owned == name),
            "install renders {name} but --env would accept it"
        );
    }
}

#[test]
fn secrets_are_refused_as_plain_env() {
    let err = server_env(&[("PRIVATIZE_DEST_CREDS".into(), "u:p".into())]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--env PRIVATIZE_DEST_CREDS: a secret does not belong"),
        "{err}"
    );
}

#[test]
fn excluded_namespaces_default_to_kube_system_and_always_hold_the_install_namespace() {
    let mirror = |given: &[&str]| {
        let given: Vec<String> = given.iter().map(|s| s.to_string()).collect();
        exclude_namespaces(&given, "mirror")
    };
    assert_eq!(mirror(&[]), ["kube-system", "mirror"]);
    assert_eq!(mirror(&["monitoring", " "]), ["monitoring", "mirror"]);
    assert_eq!(mirror(&["mirror", "team-*"]), ["mirror", "team-*"]);
    // serve's env and the pod webhook's namespaceSelector (globs left to serve).
    let mut s = settings();
    s.exclude_namespaces = mirror(&["kube-system", "team-*", "monitoring"]);
    let objects = objects(&s).unwrap();
    let yaml = render_yaml(&s, &objects).unwrap();
    assert!(
        yaml.contains("value: kube-system,team-*,monitoring,mirror"),
        "{yaml}"
    );
    let config: serde_json::Value = objects
        .iter()
        .find(|o| o.describe().starts_with("MutatingWebhookConfiguration"))
        .map(|o| serde_json::to_value(&o.object).unwrap())
        .unwrap();
    assert_eq!(
        config["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "monitoring", "mirror"])
    );
}

/// Every RBAC object rendered for `args`, by `Kind/name`, with its rules.
fn rules_by_role(args: &[&str]) -> Vec<(String, serde_json::Value)> {
    objects(&super::settings(&install_args(args)).unwrap())
        .unwrap()
        .iter()
        .filter(|o| o.describe().starts_with("ClusterRole/") || o.describe().starts_with("Role/"))
        .map(|o| {
            let value = serde_json::to_value(&o.object).unwrap();
            (o.describe(), value["rules"].clone())
        })
        .collect()
}

#[test]
fn serves_cluster_role_may_list_and_watch_nodes_only_with_platforms_auto() {
    let nodes =
        serde_json::json!({"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]});
    let mentions_nodes = |rules: &serde_json::Value| rules.to_string().contains("nodes");
    let auto = rules_by_role(&["--platforms", "auto"]);
    let serve = &auto
        .iter()
        .find(|(name, _)| name == "ClusterRole/privatize-webhook")
        .unwrap()
        .1;
    let serve = serve.as_array().unwrap();
    assert_eq!(
        serve.iter().filter(|r| **r == nodes).count(),
        1,
        "{serve:?}"
    );
    assert_eq!(
        serve.iter().filter(|r| mentions_nodes(r)).count(),
        1,
        "no other rule names nodes: {serve:?}"
    );
    for (name, rules) in &auto {
        if name != "ClusterRole/privatize-webhook" {
            assert!(!mentions_nodes(rules), "{name} gets no Node right: {rules}");
        }
    }
    for args in [
        &[][..],
        &["--platforms", "all"],
        &["--platforms", ""],
        &["--platforms", "linux/amd64,linux/arm64/v8"],
    ] {
        for (name, rules) in rules_by_role(args) {
            assert!(
                !mentions_nodes(&rules),
                "{args:?}: {name} gets no Node right: {rules}"
            );
        }
    }
    // Otherwise the same rules: auto adds the one and changes nothing else.
    let all = rules_by_role(&[]);
    let serve_all = &all
        .iter()
        .find(|(name, _)| name == "ClusterRole/privatize-webhook")
        .unwrap()
        .1;
    let without_nodes: Vec<_> = serve.iter().filter(|r| **r != nodes).cloned().collect();
    assert_eq!(serde_json::Value::from(without_nodes), *serve_all);
}

#[test]
fn platforms_reach_serves_env_only_when_not_all() {
    let platforms_env = |args: &[&str]| {
        let s = super::settings(&install_args(args)).unwrap();
        let env = server_container(&s)["env"].as_array().unwrap().clone();
        let found: Vec<_> = env
            .iter()
            .filter(|e| e["name"] == "PRIVATIZE_PLATFORMS")
            .cloned()
            .collect();
        assert!(found.len() <= 1, "{found:?}");
        found
            .first()
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(platforms_env(&[]), None, "all is serve's default");
    assert_eq!(platforms_env(&["--platforms", "all"]), None);
    assert_eq!(platforms_env(&["--platforms", " all "]), None);
    assert_eq!(platforms_env(&["--platforms", ""]), None);
    assert_eq!(platforms_env(&["--platforms", ","]), None);
    assert_eq!(
        platforms_env(&["--platforms", "auto"]).as_deref(),
        Some("auto")
    );
    assert_eq!(
        platforms_env(&["--platforms", "linux/arm64,linux/amd64,linux/arm/v7"]).as_deref(),
        Some("linux/arm64,linux/amd64,linux/arm/v7"),
        "as given, like the chart renders it"
    );
    // serve's alone: neither the CronJob nor anything else carries it.
    let s = super::settings(&install_args(&["--platforms", "auto"])).unwrap();
    let yaml = render_yaml(&s, &objects(&s).unwrap()).unwrap();
    assert_eq!(yaml.matches("PRIVATIZE_PLATFORMS").count(), 1, "{yaml}");
}

#[test]
fn platforms_as_env_is_refused_naming_the_flag() {
    let args = install_args(&["--env", "PRIVATIZE_PLATFORMS=linux/amd64"]);
    assert_eq!(
        super::settings(&args).unwrap_err().to_string(),
        "--env PRIVATIZE_PLATFORMS: install sets it; use --platforms"
    );
}

#[test]
fn a_bad_platforms_value_is_a_usage_error() {
    use clap::Parser;
    for (bad, entry) in [
        ("linux", "linux"),
        ("Linux/AMD64", "Linux/AMD64"),
        ("linux/amd64/v8/x", "linux/amd64/v8/x"),
        ("linux//amd64", "linux//amd64"),
        ("linux/amd64, windows", "windows"),
        ("auto,linux/amd64", "auto"),
        ("all,linux/amd64", "all"),
        ("linux/amd-64", "linux/amd-64"),
    ] {
        let err = crate::cli::Cli::try_parse_from(["privatize", "install", "--platforms", bad])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "{entry:?} is not OS/ARCH[/VARIANT] (e.g. linux/arm64); use `all`, `auto` or a comma-separated list"
            )),
            "{bad}: {text}"
        );
    }
    for good in [
        "all",
        "auto",
        "linux/amd64",
        "linux/arm64/v8, windows/amd64",
        "linux/ppc64le,linux/s390x",
    ] {
        assert!(
            crate::cli::Cli::try_parse_from(["privatize", "install", "--platforms", good]).is_ok(),
            "{good}"
        );
    }
}
