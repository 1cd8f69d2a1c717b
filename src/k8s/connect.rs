//! Where the Kubernetes client comes from, and one line when it comes from
//! nowhere. kube's own inference error repeats one cause three times through
//! its source chain (about 700 characters); a user needs what was tried and
//! how to fix it.

use kube::config::KubeconfigError;

/// What the environment offered when inference failed.
pub struct Sought<'a> {
    /// `KUBECONFIG`, when set.
    pub kubeconfig_env: Option<&'a str>,
    /// Whether `KUBERNETES_SERVICE_HOST` is set (privatize runs in a pod).
    pub in_pod: bool,
}

/// The one-line error for a failed inference: the kubeconfig's failure, the
/// in-cluster one, and the three ways to fix it.
pub fn no_cluster(sought: &Sought, kubeconfig: &KubeconfigError) -> String {
    let file = match sought.kubeconfig_env {
        Some(path) => format!("KUBECONFIG={path}"),
        None => "~/.kube/config".to_string(),
    };
    let absent = "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)";
    let kubeconfig = match kubeconfig {
        KubeconfigError::FindPath => absent.to_string(),
        KubeconfigError::ReadConfig(err, _)
            if sought.kubeconfig_env.is_none() && err.kind() == std::io::ErrorKind::NotFound =>
        {
            absent.to_string()
        }
        KubeconfigError::ReadConfig(err, _) => format!("cannot read {file}: {}", io_reason(err)),
        other => format!("{file} is not usable: {}", chain(other)),
    };
    let in_cluster = if sought.in_pod {
        "and this pod's service account is not usable (token or CA missing under /var/run/secrets/kubernetes.io/serviceaccount)"
    } else {
        "and this is not a pod (KUBERNETES_SERVICE_HOST is not set)"
    };
    format!(
        "connecting to Kubernetes: {kubeconfig}, {in_cluster}; set KUBECONFIG to a kubeconfig file, create ~/.kube/config, or run privatize in a pod"
    )
}

/// An I/O error without the `(os error N)` suffix.
fn io_reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// An error and its causes, each said once (kube's messages often embed
/// their source already).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nowhere() -> Sought<'static> {
        Sought {
            kubeconfig_env: None,
            in_pod: false,
        }
    }

    #[test]
    fn no_kubeconfig_and_no_pod_says_both_and_the_fixes() {
        assert_eq!(
            no_cluster(&nowhere(), &KubeconfigError::FindPath),
            "connecting to Kubernetes: no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist), \
             and this is not a pod (KUBERNETES_SERVICE_HOST is not set); \
             set KUBECONFIG to a kubeconfig file, create ~/.kube/config, or run privatize in a pod"
        );
    }

    #[test]
    fn a_wrong_kubeconfig_path_is_named_with_its_reason_once() {
        let sought = Sought {
            kubeconfig_env: Some("/nowhere/config"),
            in_pod: false,
        };
        let err = KubeconfigError::ReadConfig(
            std::io::Error::from_raw_os_error(2),
            "/nowhere/config".into(),
        );
        let line = no_cluster(&sought, &err);
        assert!(
            line.starts_with(
                "connecting to Kubernetes: cannot read KUBECONFIG=/nowhere/config: No such file or directory, and this is not a pod"
            ),
            "{line}"
        );
        assert_eq!(line.matches("No such file").count(), 1, "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn an_absent_default_kubeconfig_is_no_kubeconfig() {
        let err = KubeconfigError::ReadConfig(
            std::io::Error::from_raw_os_error(2),
            "/root/.kube/config".into(),
        );
        assert_eq!(
            no_cluster(&nowhere(), &err),
            no_cluster(&nowhere(), &KubeconfigError::FindPath)
        );
    }

    #[test]
    fn in_a_pod_the_service_account_is_named() {
        let sought = Sought {
            kubeconfig_env: None,
            in_pod: true,
        };
        let line = no_cluster(&sought, &KubeconfigError::FindPath);
        assert!(
            line.contains("this pod's service account is not usable"),
            "{line}"
        );
    }

    #[test]
    fn an_unusable_kubeconfig_says_why_without_repeating() {
        let err = KubeconfigError::CurrentContextNotSet;
        let line = no_cluster(&nowhere(), &err);
        assert!(
            line.starts_with(
                "connecting to Kubernetes: ~/.kube/config is not usable: failed to determine current context, and"
            ),
            "{line}"
        );
    }
}
