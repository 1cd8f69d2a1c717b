//! Edge: the Kubernetes API through kube-rs. Server-side apply of typed
//! objects (field manager `privatize`), deletes that tolerate absence, and the
//! TLS Secret and `caBundle` that gen-certs and install share.

use std::any::TypeId;
use std::collections::BTreeMap;

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::tls::Issued;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "privatize";
/// Label on every object privatize manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "privatize");

mod connect;

/// A client from KUBECONFIG / ~/.kube/config, or the in-cluster service
/// account; when there is none, one line naming what was tried.
pub async fn client() -> Result<Client> {
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(err) => {
            let kubeconfig_env = std::env::var("KUBECONFIG").ok();
            let sought = connect::Sought {
                kubeconfig_env: kubeconfig_env.as_deref().filter(|v| !v.is_empty()),
                in_pod: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            };
            let line = match std::error::Error::source(&err)
                .and_then(|s| s.downcast_ref::<kube::config::KubeconfigError>())
            {
                Some(kubeconfig) => connect::no_cluster(&sought, kubeconfig),
                None => format!("connecting to Kubernetes: {err}"),
            };
            anyhow::bail!(line)
        }
    };
    Client::try_from(config).context("connecting to Kubernetes")
}

/// A typed object made generic, so one list can hold every kind.
#[derive(Debug, Clone)]
pub struct Object {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub object: DynamicObject,
}

impl Object {
    /// Wraps a typed object; apiVersion, kind and scope come from its type.
    pub fn new<K>(typed: &K) -> Result<Self>
    where
        K: Resource<DynamicType = ()> + Serialize,
        K::Scope: 'static,
    {
        let namespaced = TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>();
        let resource = ApiResource::erase::<K>(&());
        let mut value = serde_json::to_value(typed).context("serialising a manifest")?;
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = resource.kind.clone().into();
        let object: DynamicObject =
            serde_json::from_value(value).context("serialising a manifest")?;
        Ok(Self {
            resource,
            namespaced,
            object,
        })
    }

    /// Whether this is the object of type `K` called `name`.
    pub fn is<K: Resource<DynamicType = ()>>(&self, name: &str) -> bool {
        self.resource.kind == K::kind(&()) && self.object.metadata.name.as_deref() == Some(name)
    }

    /// `Kind/name` (with the namespace for namespaced objects), for messages.
    pub fn describe(&self) -> String {
        match self.object.namespace() {
            Some(ns) if self.namespaced => {
                format!("{}/{} in {ns}", self.resource.kind, self.object.name_any())
            }
            _ => format!("{}/{}", self.resource.kind, self.object.name_any()),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match (self.namespaced, self.object.namespace()) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// Server-side applies an object (forcing ownership of the fields we set).
pub async fn apply(client: &Client, object: &Object) -> Result<DynamicObject> {
    let name = object.object.name_any();
    object
        .api(client)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object.object),
        )
        .await
        .with_context(|| format!("applying {}", object.describe()))
}

/// Deletes an object; `Ok(false)` when it was already gone.
pub async fn delete(client: &Client, object: &Object) -> Result<bool> {
    let name = object.object.name_any();
    match object
        .api(client)
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(err) => Err(err).with_context(|| format!("deleting {}", object.describe())),
    }
}

/// Reads an object back; `None` when absent.
pub async fn get(client: &Client, object: &Object) -> Result<Option<DynamicObject>> {
    object
        .api(client)
        .get_opt(&object.object.name_any())
        .await
        .with_context(|| format!("reading {}", object.describe()))
}

/// The TLS Secret's keys: the CA, the serving certificate and its key.
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";

/// The `kubernetes.io/tls` Secret holding a CA and the serving certificate it signed.
pub fn tls_secret(namespace: &str, name: &str, issued: &Issued) -> Result<Object> {
    let data: BTreeMap<String, ByteString> = [
        (CA_KEY, &issued.ca_pem),
        (CERT_KEY, &issued.cert_pem),
        (KEY_KEY, &issued.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Object::new(&Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())].into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    })
}

/// Reads the TLS Secret back; `None` when it is absent or lacks a key.
pub async fn read_tls_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Issued>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .with_context(|| format!("reading Secret {name} in {namespace}"))?;
    let Some(data) = secret.and_then(|s| s.data) else {
        return Ok(None);
    };
    let field = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
    };
    Ok(match (field(CA_KEY), field(CERT_KEY), field(KEY_KEY)) {
        (Some(ca_pem), Some(cert_pem), Some(key_pem)) => Some(Issued {
            ca_pem,
            cert_pem,
            key_pem,
        }),
        _ => None,
    })
}

/// The CAs the webhooks of a configuration trust now (every `caBundle`, one
/// after the other); `None` when the configuration does not exist.
pub async fn read_ca_bundle(client: &Client, config: &str) -> Result<Option<String>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let found = api
        .get_opt(config)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {config}"))?;
    Ok(found.map(|c| {
        c.webhooks
            .iter()
            .flatten()
            .filter_map(|w| w.client_config.ca_bundle.as_ref())
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .collect()
    }))
}

/// Sets `caBundle` (PEM) on every webhook of the configuration that has
/// another one; `Ok(false)` when there was nothing to change.
pub async fn patch_ca_bundle(client: &Client, config: &str, bundle_pem: &str) -> Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let found = api
        .get_opt(config)
        .await
        .with_context(|| format!("reading MutatingWebhookConfiguration {config}"))?
        .with_context(|| format!("MutatingWebhookConfiguration {config} not found"))?;
    let bundle = ByteString(bundle_pem.as_bytes().to_vec());
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle_pem);
    let mut ops = Vec::new();
    for (i, webhook) in found.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() != Some(&bundle) {
            // The test guards against the list changing under us between read and patch.
            ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
            ops.push(serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
        }
    }
    if ops.is_empty() {
        return Ok(false);
    }
    let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(ops))
        .context("building the caBundle patch")?;
    api.patch(config, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .with_context(|| format!("patching caBundle of MutatingWebhookConfiguration {config}"))?;
    Ok(true)
}
