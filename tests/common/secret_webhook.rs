//! The registration that sends one test namespace's managed Secrets to a
//! Secret webhook by URL (the real `privatize serve` of a test), scoped so
//! tests running at once never see each other.

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};

/// A MutatingWebhookConfiguration sending one namespace's managed Secrets (both
/// label schemes) to `url`, `failurePolicy: Fail` as installed; deleted on drop.
pub struct Registration {
    pub name: String,
}

impl Registration {
    pub async fn create(client: &kube::Client, namespace: &str, url: &str, ca_pem: &str) -> Self {
        let name = format!("privatize-test-{namespace}");
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let webhook = |suffix: &str, label: (&str, &str)| {
            serde_json::json!({
                "name": format!("{suffix}.{namespace}.test.privatize.io"),
                "clientConfig": {"url": url, "caBundle": ca},
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["secrets"],
                    "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {label.0: label.1}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1", "v1beta1"],
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 10,
            })
        };
        let config: MutatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "webhooks": [
                webhook("secrets", ("privatize.io/ecr-credentials", "managed")),
                webhook("legacy-secrets", ("ecr-anywhere.centml.ai/managed", "true")),
            ],
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .expect("registering the test webhook");
        Self { name }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        super::kube::delete_from_drop::<MutatingWebhookConfiguration>(&self.name);
    }
}
