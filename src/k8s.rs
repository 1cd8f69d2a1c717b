//! Edge: the Kubernetes API through kube-rs. Server-side apply of typed
//! objects (field manager `privatize`), deletes that tolerate absence, and the
//! few reads and patches the rooms need.

use anyhow::{Context, Result};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "privatize";
/// Label on every object privatize manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "privatize");

/// A client from KUBECONFIG / ~/.kube/config, or the in-cluster service account.
pub async fn client() -> Result<Client> {
    Client::try_default()
        .await
        .context("connecting to Kubernetes (KUBECONFIG, ~/.kube/config or in-cluster)")
}

/// A typed object made generic, so one list can hold every kind.
#[derive(Debug, Clone)]
pub struct Object {
    pub resource: ApiResource,
    pub namespaced: bool,
    pub object: DynamicObject,
}

impl Object {
    /// Wraps a typed object; apiVersion and kind are filled in from its type.
    pub fn new<K>(typed: &K, namespaced: bool) -> Result<Self>
    where
        K: Resource<DynamicType = ()> + Serialize,
    {
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
