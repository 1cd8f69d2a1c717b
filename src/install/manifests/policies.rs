//! The fences (DESIGN §11 "Rights fenced by the apiserver"): two
//! ValidatingAdmissionPolicies bound to privatize's own ServiceAccounts, so
//! that what RBAC must grant broadly (patch any pod, write Secrets where
//! enabled) is narrowed by the apiserver itself to what privatize's code
//! does. Even a stolen serve token can then only take privatize's gate and
//! labels off a pod, set its images back to the originals recorded on it,
//! and write managed `kubernetes.io/dockerconfigjson` Secrets.

use anyhow::Result;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};

use super::{meta, Settings, REFRESH_ACCOUNT, SERVER_ACCOUNT, TLS_SECRET};
use crate::k8s::Object;

/// The policy fencing serve's pod patches.
pub const POD_POLICY: &str = "privatize-webhook-pods";
/// The policy fencing privatize's Secret writes.
pub const SECRET_POLICY: &str = "privatize-secrets";

/// `system:serviceaccount:<ns>:<account>`.
fn user(s: &Settings, account: &str) -> String {
    format!("system:serviceaccount:{}:{account}", s.namespace)
}

/// A CEL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn rule(resource: &str, operations: &[&str]) -> NamedRuleWithOperations {
    NamedRuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".into()]),
        operations: Some(operations.iter().map(|o| o.to_string()).collect()),
        resources: Some(vec![resource.into()]),
        ..Default::default()
    }
}

fn validation(expression: &str, message: &str) -> Validation {
    Validation {
        expression: expression.into(),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// What serve's account may change on a pod (an UPDATE of `pods`): drop the
/// gate `privatize.io/mirror`, drop its labels `privatize.io/gated` and
/// `privatize.io/copy-pending`, and set a container's image to the original
/// recorded for it in `privatize.io/original-images` (serve writes that JSON
/// compact: `"name":"image"`). Nothing else.
fn pod_policy(s: &Settings) -> ValidatingAdmissionPolicy {
    let labels = "object.metadata.?labels.orValue({})";
    let old_labels = "oldObject.metadata.?labels.orValue({})";
    let gates = "object.spec.?schedulingGates.orValue([])";
    let old_gates = "oldObject.spec.?schedulingGates.orValue([])";
    let images_back = |field: &str| {
        format!(
            "object.spec.?{field}.orValue([]).all(c, oldObject.spec.?{field}.orValue([]).exists(o, o.name == c.name && (o.image == c.image || variables.originals.contains('\"' + c.name + '\":\"' + c.image + '\"'))))"
        )
    };
    ValidatingAdmissionPolicy {
        metadata: meta(POD_POLICY, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![rule("pods", &["UPDATE"])]),
                ..Default::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "privatize-webhook".into(),
                expression: format!(
                    "request.userInfo.username == {}",
                    quoted(&user(s, SERVER_ACCOUNT))
                ),
            }]),
            variables: Some(vec![Variable {
                name: "originals".into(),
                expression:
                    "oldObject.metadata.?annotations.orValue({})[?'privatize.io/original-images'].orValue('')"
                        .into(),
            }]),
            validations: Some(vec![
                validation(
                    "object.metadata.?annotations.orValue({}) == oldObject.metadata.?annotations.orValue({})",
                    "privatize-webhook may not change a pod's annotations",
                ),
                validation(
                    &format!(
                        "{labels}.all(k, k in {old_labels} && {labels}[k] == {old_labels}[k]) && {old_labels}.all(k, k in {labels} || k == 'privatize.io/gated' || k == 'privatize.io/copy-pending')"
                    ),
                    "privatize-webhook may only remove its own labels from a pod",
                ),
                validation(
                    &format!(
                        "{gates}.all(g, {old_gates}.exists(o, o.name == g.name)) && {old_gates}.all(o, o.name == 'privatize.io/mirror' || {gates}.exists(g, g.name == o.name))"
                    ),
                    "privatize-webhook may only remove its own scheduling gate",
                ),
                validation(
                    &format!(
                        "{} && {}",
                        images_back("containers"),
                        images_back("initContainers")
                    ),
                    "privatize-webhook may only set a pod's images back to the originals recorded on it",
                ),
                validation(
                    "object.spec.?activeDeadlineSeconds == oldObject.spec.?activeDeadlineSeconds && object.spec.?tolerations.orValue([]) == oldObject.spec.?tolerations.orValue([])",
                    "privatize-webhook may not change a pod's deadline or tolerations",
                ),
            ]),
            ..Default::default()
        }),
        status: None,
    }
}

/// What privatize's accounts may write as Secrets: managed
/// `kubernetes.io/dockerconfigjson` Secrets (label of either scheme, before
/// and after), and serve its own TLS Secret (the certificate it renews),
/// nothing else.
fn secret_policy(s: &Settings) -> ValidatingAdmissionPolicy {
    let managed = |object: &str| {
        format!(
            "{object}.type == 'kubernetes.io/dockerconfigjson' && ({object}.metadata.?labels.orValue({{}})[?'privatize.io/ecr-credentials'].orValue('') == 'managed' || {object}.metadata.?labels.orValue({{}})[?'ecr-anywhere.centml.ai/managed'].orValue('') == 'true')"
        )
    };
    ValidatingAdmissionPolicy {
        metadata: meta(SECRET_POLICY, None),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![rule("secrets", &["CREATE", "UPDATE"])]),
                ..Default::default()
            }),
            match_conditions: Some(vec![MatchCondition {
                name: "privatize-accounts".into(),
                expression: format!(
                    "request.userInfo.username in [{}, {}]",
                    quoted(&user(s, SERVER_ACCOUNT)),
                    quoted(&user(s, REFRESH_ACCOUNT))
                ),
            }]),
            validations: Some(vec![validation(
                &format!(
                    "(request.userInfo.username == {} && request.namespace == {} && request.name == {}) || ({} && (request.operation == 'CREATE' || {}))",
                    quoted(&user(s, SERVER_ACCOUNT)),
                    quoted(&s.namespace),
                    quoted(TLS_SECRET),
                    managed("object"),
                    managed("oldObject")
                ),
                "privatize's accounts may only write managed kubernetes.io/dockerconfigjson Secrets (and serve its own TLS Secret)",
            )]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Both policies and their bindings (Deny, every namespace).
pub(super) fn objects(s: &Settings) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for policy in [pod_policy(s), secret_policy(s)] {
        let name = policy.metadata.name.clone().unwrap_or_default();
        out.push(Object::new(&policy)?);
        out.push(Object::new(&ValidatingAdmissionPolicyBinding {
            metadata: meta(&name, None),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(name.clone()),
                validation_actions: Some(vec!["Deny".into()]),
                ..Default::default()
            }),
        })?);
    }
    Ok(out)
}
