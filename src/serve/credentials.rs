//! The credential writer (DESIGN §6, §11): serve writes fresh ECR logins into
//! managed pull Secrets itself, through the Kubernetes API, never in an
//! admission response. It watches the namespaces enabled for ECR
//! credentials and, in each, the managed Secrets (label selectors, so no
//! other Secret is read); a Secret that is new, asks for a refresh
//! (`privatize.io/refresh-requested-at`), lacks a registry's login or nears
//! its expiry gets a guarded JSON Patch (`test` of its resourceVersion, so a
//! concurrent edit is never overwritten) keeping every other entry byte for
//! byte. A labelled namespace whose Secrets privatize may not read (no
//! RoleBinding of `privatize-credentials`) gets an Event, not silence.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Result;
use futures_util::{stream, StreamExt};
use json_patch::{PatchOperation, TestOperation};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::ecr::tokens::TokenCache;
use crate::ecr::Token;
use crate::mutate::secrets::{
    due, grant_command, login, namespace_enabled, new_pull_secret, secret_registries, Decision,
    EcrRegistry, Settings, ECR_ANYWHERE_MANAGED_LABEL, MANAGED_LABEL,
};

/// Managed Secrets of one namespace written at once.
const WRITERS: usize = 16;

/// How often a labelled namespace whose Secrets privatize may not read is
/// asked again.
const FORBIDDEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(15);

/// The writer and what it shares with the Secret webhook.
pub struct Credentials {
    pub client: Client,
    pub settings: Settings,
    pub tokens: Arc<TokenCache>,
    pub metrics: Arc<Metrics>,
    /// Instance name for Events (the pod name in a cluster).
    pub instance: String,
    /// serve's own namespace (for the grant in Events).
    pub own_namespace: String,
    /// Namespace globs this serve writes in (`--credential-namespaces`).
    pub namespaces: Vec<String>,
}

impl Credentials {
    fn recorder(&self) -> Recorder {
        Recorder::new(
            self.client.clone(),
            Reporter {
                controller: "privatize".into(),
                instance: Some(self.instance.clone()),
            },
        )
    }

    /// Runs until `shutdown` fires: one watch of every namespace, and one task
    /// per enabled namespace watching its managed Secrets.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let mut tasks: HashMap<String, AbortHandle> = HashMap::new();
        let namespaces = watcher(
            Api::<Namespace>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff();
        futures_util::pin_mut!(namespaces);
        let result = loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => break Ok(()),
                event = namespaces.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns))) => {
                    let name = ns.name_any();
                    let enabled = namespace_enabled(&ns.labels().clone())
                        && self
                            .namespaces
                            .iter()
                            .any(|glob| crate::mutate::glob_match(glob.trim(), &name));
                    let live = ns.metadata.deletion_timestamp.is_none();
                    match (enabled && live, tasks.contains_key(&name)) {
                        (true, false) => {
                            let task = tokio::spawn(self.clone().namespace(ns));
                            tasks.insert(name, task.abort_handle());
                        }
                        (false, true) => {
                            if let Some(task) = tasks.remove(&name) {
                                task.abort();
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(watcher::Event::Delete(ns))) => {
                    if let Some(task) = tasks.remove(&ns.name_any()) {
                        task.abort();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::warn!(error = %err, "watching namespaces"),
                None => break Err(anyhow::anyhow!("the namespace watch ended")),
            }
        };
        for task in tasks.into_values() {
            task.abort();
        }
        result
    }

    /// Watches one enabled namespace's managed Secrets (both label schemes).
    async fn namespace(self: Arc<Self>, namespace: Namespace) {
        let name = namespace.name_any();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &name);
        let recorder = self.recorder();
        let mut told = false;
        loop {
            // May privatize read Secrets here (a RoleBinding of
            // privatize-credentials)? Asked again every FORBIDDEN_RECHECK
            // while not, quietly: the grant takes effect without a restart.
            let probe = ListParams::default()
                .labels(&format!("{}={}", MANAGED_LABEL.0, MANAGED_LABEL.1))
                .limit(1);
            match api.list_metadata(&probe).await {
                Ok(_) => told = false,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    if !std::mem::replace(&mut told, true) {
                        self.tell_forbidden(&name, &namespace, &recorder).await;
                    }
                    tokio::time::sleep(FORBIDDEN_RECHECK).await;
                    continue;
                }
                Err(err) => {
                    tracing::warn!(namespace = %name, error = %err, "listing managed Secrets");
                    tokio::time::sleep(FORBIDDEN_RECHECK).await;
                    continue;
                }
            }
            self.watch(&api, &name, &recorder).await;
        }
    }

    /// Watches one namespace's managed Secrets (both label schemes) and
    /// writes the due ones, until the watch is refused (the grant was taken
    /// away). Secrets are written WRITERS at a time (500 created at once get
    /// their logins in about a second); two events of one Secret may overlap,
    /// and the resourceVersion guard lets only one write win.
    async fn watch(&self, api: &Api<Secret>, name: &str, recorder: &Recorder) {
        let by = |(key, value): (&str, &str)| {
            watcher(
                api.clone(),
                watcher::Config::default().labels(&format!("{key}={value}")),
            )
            .default_backoff()
            .boxed()
        };
        stream::select(by(MANAGED_LABEL), by(ECR_ANYWHERE_MANAGED_LABEL))
            .take_while(|event| {
                let refused = matches!(event, Err(err) if is_forbidden(err));
                std::future::ready(!refused)
            })
            .for_each_concurrent(WRITERS, |event| async move {
                match event {
                    Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                        self.write_if_due(&secret, recorder).await;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(namespace = %name, error = %err, "watching managed Secrets")
                    }
                }
            })
            .await;
    }

    /// A labelled namespace whose Secrets privatize may not read: a metric,
    /// a warning and an Event naming the grant.
    async fn tell_forbidden(&self, name: &str, namespace: &Namespace, recorder: &Recorder) {
        self.metrics.credential_namespace_forbidden();
        let note = format!(
            "namespace {name} is labelled for ECR credentials, but privatize may not read its Secrets: bind the ClusterRole privatize-credentials here ({})",
            grant_command(name, &self.own_namespace)
        );
        tracing::warn!(namespace = %name, "{note}");
        publish(
            recorder,
            &namespace.object_ref(&()),
            EventType::Warning,
            "CredentialsForbidden",
            note,
        )
        .await;
    }

    /// Writes fresh logins into `secret` when it is due for them.
    async fn write_if_due(&self, secret: &Secret, recorder: &Recorder) {
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let registries = match secret_registries(secret, &self.settings) {
            Ok(Some(registries)) => registries,
            Ok(None) => return,
            Err(denial) => {
                tracing::warn!(namespace = %namespace, secret = %name, reason = %denial, "managed Secret cannot get logins");
                return;
            }
        };
        let now = SystemTime::now();
        let Some(why) = due(secret, &registries, now) else {
            return;
        };
        match self.write(secret, &registries, now).await {
            Ok(true) => {
                self.metrics.secret_injected();
                tracing::info!(namespace = %namespace, secret = %name, why, registries = ?registries.iter().map(|r| &r.host).collect::<Vec<_>>(), "ECR logins written");
            }
            // Changed meanwhile: its next event is looked at.
            Ok(false) => {}
            Err(err) => {
                let note = format!("writing fresh ECR logins: {err:#}; the Secret's current logins are left in place");
                tracing::warn!(namespace = %namespace, secret = %name, error = %format!("{err:#}"), "ECR logins not written");
                publish(
                    recorder,
                    &secret.object_ref(&()),
                    EventType::Warning,
                    "CredentialsFailed",
                    note,
                )
                .await;
            }
        }
    }

    /// Fetches the tokens and applies the guarded patch; `false` when the
    /// Secret changed since it was read.
    async fn write(
        &self,
        secret: &Secret,
        registries: &[EcrRegistry],
        now: SystemTime,
    ) -> Result<bool> {
        let tokens = self.tokens_for(registries).await?;
        let Decision::Inject(injection) =
            login(secret, &self.settings, &tokens, now).map_err(|d| anyhow::anyhow!("{d}"))?
        else {
            return Ok(true);
        };
        let mut ops = vec![PatchOperation::Test(TestOperation {
            path: crate::mutate::pointer(["metadata", "resourceVersion"]),
            value: secret.resource_version().unwrap_or_default().into(),
        })];
        ops.extend(injection.patch);
        let (namespace, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Json::<()>(json_patch::Patch(ops)),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(false),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("patching Secret {namespace}/{name}")))
            }
        }
    }

    /// One token per region, from the cache shared with the Secret webhook.
    async fn tokens_for(&self, registries: &[EcrRegistry]) -> Result<HashMap<String, Token>> {
        let mut tokens = HashMap::new();
        for registry in registries {
            let token = self.tokens.token(&registry.region).await.map_err(|err| {
                err.context(format!(
                    "getting an ECR token for {} (region {})",
                    registry.host, registry.region
                ))
            })?;
            tokens.insert(registry.host.clone(), token);
        }
        Ok(tokens)
    }

    /// Creates the managed pull Secret `name` in `namespace`, with its logins
    /// already written (a pod admitted now may pull at once). `Ok(false)`
    /// when it may not (no RoleBinding of `privatize-credentials` there).
    pub async fn create_pull_secret(&self, namespace: &str, name: &str) -> Result<bool> {
        let mut secret = new_pull_secret(namespace, name);
        let registries = secret_registries(&secret, &self.settings)
            .map_err(|d| anyhow::anyhow!("{d}"))?
            .unwrap_or_default();
        let tokens = self.tokens_for(&registries).await?;
        if let Decision::Inject(injection) =
            login(&secret, &self.settings, &tokens, SystemTime::now())
                .map_err(|d| anyhow::anyhow!("{d}"))?
        {
            let mut value = serde_json::to_value(&secret)?;
            json_patch::patch(&mut value, &injection.patch)
                .map_err(|e| anyhow::anyhow!("writing the pull Secret's logins: {e}"))?;
            secret = serde_json::from_value(value)?;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(namespace, secret = name, "managed pull Secret created");
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
            Err(err) => {
                Err(anyhow::Error::new(err).context(format!("creating Secret {namespace}/{name}")))
            }
        }
    }
}

/// Whether a watch failed because privatize may not list or watch there.
fn is_forbidden(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 403,
        watcher::Error::WatchError(s) => s.code == 403,
        _ => false,
    }
}

async fn publish(
    recorder: &Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    kind: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: kind,
        reason: reason.into(),
        note: Some(note),
        action: "WriteCredentials".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, object).await {
        tracing::warn!(error = %err, reason, "event not recorded");
    }
}
