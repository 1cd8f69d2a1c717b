//! The MutatingWebhookConfiguration: pods (`failurePolicy: Ignore`) and
//! managed Secrets (ours and ecr-anywhere's labels, `failurePolicy: Fail`),
//! each skipping privatize's own namespace.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::ByteString;

use super::{
    meta, string_map, strings, Settings, LEGACY_NAMESPACE_LABEL, LEGACY_SECRET_LABEL,
    LEGACY_SECRET_WEBHOOK, NAME, NAMESPACE_LABEL, POD_WEBHOOK, SECRET_LABEL, SECRET_WEBHOOK,
};

const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) fn configuration(s: &Settings) -> MutatingWebhookConfiguration {
    let pods = MutatingWebhook {
        failure_policy: Some("Ignore".into()),
        side_effects: "NoneOnDryRun".into(),
        rules: Some(vec![
            pod_rule("CREATE", "pods"),
            pod_rule("UPDATE", "pods/ephemeralcontainers"),
        ]),
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![not_in(&literal(&s.exclude_namespaces))]),
            ..Default::default()
        }),
        ..common(s, POD_WEBHOOK, "/mutate/pods")
    };
    MutatingWebhookConfiguration {
        metadata: meta(NAME, None),
        webhooks: Some(vec![
            pods,
            secrets(s, SECRET_WEBHOOK, NAMESPACE_LABEL, SECRET_LABEL),
            secrets(
                s,
                LEGACY_SECRET_WEBHOOK,
                LEGACY_NAMESPACE_LABEL,
                LEGACY_SECRET_LABEL,
            ),
        ]),
    }
}

/// A managed-Secret webhook: opt-in by namespace label and Secret label.
fn secrets(
    s: &Settings,
    name: &str,
    namespace_label: (&str, &str),
    secret_label: (&str, &str),
) -> MutatingWebhook {
    MutatingWebhook {
        // A managed Secret is never stored with stale or missing credentials.
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        rules: Some(vec![RuleWithOperations {
            api_groups: Some(strings([""])),
            api_versions: Some(strings(["v1"])),
            operations: Some(strings(["CREATE", "UPDATE"])),
            resources: Some(strings(["secrets"])),
            scope: Some("Namespaced".into()),
        }]),
        namespace_selector: Some(LabelSelector {
            match_labels: Some(string_map([namespace_label])),
            match_expressions: Some(vec![not_in(&[&s.namespace])]),
        }),
        object_selector: Some(LabelSelector {
            match_labels: Some(string_map([secret_label])),
            ..Default::default()
        }),
        ..common(s, name, "/mutate/secrets")
    }
}

/// What every webhook shares; the caller sets policy, rules and selectors.
fn common(s: &Settings, name: &str, path: &str) -> MutatingWebhook {
    MutatingWebhook {
        name: name.into(),
        client_config: client_config(s, path),
        admission_review_versions: strings(["v1", "v1beta1"]),
        reinvocation_policy: Some("IfNeeded".into()),
        match_policy: Some("Equivalent".into()),
        timeout_seconds: Some(10),
        ..Default::default()
    }
}

fn client_config(s: &Settings, path: &str) -> WebhookClientConfig {
    let (url, service) = match &s.webhook_url {
        Some(url) => (Some(format!("{}{path}", url.trim_end_matches('/'))), None),
        None => (
            None,
            Some(ServiceReference {
                namespace: s.namespace.clone(),
                name: NAME.into(),
                path: Some(path.into()),
                port: Some(443),
            }),
        ),
    };
    WebhookClientConfig {
        url,
        service,
        ca_bundle: s
            .ca_bundle
            .as_ref()
            .map(|pem| ByteString(pem.as_bytes().to_vec())),
    }
}

fn pod_rule(operation: &str, resource: &str) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(strings([""])),
        api_versions: Some(strings(["v1"])),
        operations: Some(vec![operation.into()]),
        resources: Some(vec![resource.into()]),
        scope: Some("Namespaced".into()),
    }
}

/// The entries without glob characters: a namespaceSelector cannot match globs.
fn literal(namespaces: &[String]) -> Vec<&str> {
    namespaces
        .iter()
        .map(String::as_str)
        .filter(|n| !n.contains(['*', '?', '[']))
        .collect()
}

fn not_in(namespaces: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: NAMESPACE_NAME_LABEL.into(),
        operator: "NotIn".into(),
        values: Some(namespaces.iter().map(|n| n.to_string()).collect()),
    }
}
