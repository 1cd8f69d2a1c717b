//! Pure: the minimal IAM policies of privatize's three identities (DESIGN §11
//! "One identity per job") for an ECR target and prefix, as
//! `install --iam-policies` prints them: serve pulls, the copy Jobs push and
//! create repositories, the refresh CronJob calls no AWS API.

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::manifests::{COPY_JOB_ACCOUNT, REFRESH_ACCOUNT, SERVER_ACCOUNT};
use crate::ecr::parse_ecr_host;
use crate::image::TargetRegistry;

/// Where an IAM action is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not per resource (`"Resource": "*"`): GetAuthorizationToken.
    Any,
    /// A repository under the mirror prefix.
    Mirror,
    /// The `--kms-key`.
    Key,
}

/// What serve's identity is used for: GetAuthorizationToken (`ecr::authorization_token`:
/// presence checks and the logins it writes into tenants' pull Secrets), the
/// presence HEAD of a manifest, and what nodes do with those logins (pull).
pub const WEBHOOK_CALLS: [(&str, Scope); 4] = [
    ("ecr:GetAuthorizationToken", Scope::Any),
    ("ecr:BatchGetImage", Scope::Mirror),
    ("ecr:GetDownloadUrlForLayer", Scope::Mirror),
    ("ecr:BatchCheckLayerAvailability", Scope::Mirror),
];

/// What a copy Job (`sync-image`) calls: the login; `ecr::ensure_repository`
/// (DescribeRepositories, CreateRepository with its tags, then the policies;
/// completing and reconciling read and set each setting); and the registry
/// API of a copy (manifest and blob HEAD/GET, blob upload and mount, manifest PUT).
pub const COPY_JOB_CALLS: [(&str, Scope); 18] = [
    ("ecr:GetAuthorizationToken", Scope::Any),
    ("ecr:DescribeRepositories", Scope::Mirror),
    ("ecr:CreateRepository", Scope::Mirror),
    ("ecr:TagResource", Scope::Mirror),
    ("ecr:ListTagsForResource", Scope::Mirror),
    ("ecr:PutImageScanningConfiguration", Scope::Mirror),
    ("ecr:PutImageTagMutability", Scope::Mirror),
    ("ecr:GetRepositoryPolicy", Scope::Mirror),
    ("ecr:SetRepositoryPolicy", Scope::Mirror),
    ("ecr:GetLifecyclePolicy", Scope::Mirror),
    ("ecr:PutLifecyclePolicy", Scope::Mirror),
    ("ecr:BatchGetImage", Scope::Mirror),
    ("ecr:BatchCheckLayerAvailability", Scope::Mirror),
    ("ecr:GetDownloadUrlForLayer", Scope::Mirror),
    ("ecr:InitiateLayerUpload", Scope::Mirror),
    ("ecr:UploadLayerPart", Scope::Mirror),
    ("ecr:CompleteLayerUpload", Scope::Mirror),
    ("ecr:PutImage", Scope::Mirror),
];

/// With `--kms-key`: CreateRepository has ECR describe the key and create
/// its grants, in the caller's name.
pub const KMS_CALLS: [(&str, Scope); 2] = [
    ("kms:DescribeKey", Scope::Key),
    ("kms:CreateGrant", Scope::Key),
];

/// An IAM policy document, as `aws iam create-policy --policy-document` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: &'static str,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub action: Vec<&'static str>,
    #[serde(rename = "Resource")]
    pub resource: String,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

/// One ServiceAccount, who it is to AWS and what it may do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub namespace: String,
    pub service_account: &'static str,
    /// The subject an IRSA role's trust policy names (`sub` of the token).
    pub subject: String,
    /// The install flag that annotates the account.
    pub annotation_flag: &'static str,
    pub rights: &'static str,
    /// `None` (JSON null): the account needs no AWS identity at all.
    pub policy: Option<Policy>,
}

/// What `install --iam-policies` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// The target registry with its prefix.
    pub target: String,
    pub webhook: Identity,
    pub copy_job: Identity,
    pub refresh: Identity,
}

/// The three identities' policies for `target` (an ECR host `REGISTRY[/PREFIX]`),
/// privatize installed in `namespace`, new repositories encrypted with `kms_key`.
pub fn policies(target: Option<&str>, namespace: &str, kms_key: Option<&str>) -> Result<Policies> {
    let Some(target) = target else {
        bail!(
            "--iam-policies needs --target-registry (or ECR_REGISTRY): the policies name its account, region and prefix"
        );
    };
    let registry = TargetRegistry::parse(target)?;
    let Some(ecr) = parse_ecr_host(&registry.host) else {
        bail!(
            "--iam-policies needs an ECR target (<account>.dkr.ecr.<region>.amazonaws.com[/PREFIX]), not {}: \
             other registries grant pull and push through their own credentials",
            registry.host
        );
    };
    let partition = partition(&registry.host, &ecr.region);
    let mirror = match registry.prefix.as_str() {
        "" => format!(
            "arn:{partition}:ecr:{}:{}:repository/*",
            ecr.region, ecr.account
        ),
        prefix => format!(
            "arn:{partition}:ecr:{}:{}:repository/{prefix}/*",
            ecr.region, ecr.account
        ),
    };
    let login = Statement {
        sid: "EcrLogin",
        effect: "Allow",
        action: vec!["ecr:GetAuthorizationToken"],
        resource: "*".into(),
        condition: None,
    };
    let pull = Statement {
        sid: "PullMirror",
        effect: "Allow",
        action: vec![
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        ],
        resource: mirror.clone(),
        condition: None,
    };
    let mut copy = vec![
        login.clone(),
        Statement {
            sid: "MirrorRepositories",
            effect: "Allow",
            action: vec![
                "ecr:CreateRepository",
                "ecr:DescribeRepositories",
                "ecr:GetLifecyclePolicy",
                "ecr:GetRepositoryPolicy",
                "ecr:ListTagsForResource",
                "ecr:PutImageScanningConfiguration",
                "ecr:PutImageTagMutability",
                "ecr:PutLifecyclePolicy",
                "ecr:SetRepositoryPolicy",
                "ecr:TagResource",
            ],
            resource: mirror.clone(),
            condition: None,
        },
        Statement {
            sid: "PushMirror",
            effect: "Allow",
            action: vec![
                "ecr:BatchCheckLayerAvailability",
                "ecr:BatchGetImage",
                "ecr:CompleteLayerUpload",
                "ecr:GetDownloadUrlForLayer",
                "ecr:InitiateLayerUpload",
                "ecr:PutImage",
                "ecr:UploadLayerPart",
            ],
            resource: mirror,
            condition: None,
        },
    ];
    if let Some(key) = kms_key {
        copy.push(kms_statement(key, partition, &ecr.region, &ecr.account)?);
    }
    let identity = |service_account, annotation_flag, rights, policy| Identity {
        namespace: namespace.to_string(),
        service_account,
        subject: format!("system:serviceaccount:{namespace}:{service_account}"),
        annotation_flag,
        rights,
        policy,
    };
    Ok(Policies {
        target: match registry.prefix.as_str() {
            "" => registry.host.clone(),
            prefix => format!("{}/{prefix}", registry.host),
        },
        webhook: identity(
            SERVER_ACCOUNT,
            "--webhook-service-account-annotation",
            "pull-only on the mirror: presence checks, and the logins serve writes into tenants' pull Secrets",
            Some(document(vec![login, pull])),
        ),
        copy_job: identity(
            COPY_JOB_ACCOUNT,
            "--copy-job-service-account-annotation",
            "push and repository creation on the mirror: the copy Jobs",
            Some(document(copy)),
        ),
        refresh: identity(
            REFRESH_ACCOUNT,
            "--refresh-service-account-annotation",
            "none: refresh-secrets calls no AWS API; give this account no role",
            None,
        ),
    })
}

fn document(statement: Vec<Statement>) -> Policy {
    Policy {
        version: "2012-10-17",
        statement,
    }
}

/// The AWS partition of an ECR host: China and GovCloud have their own.
fn partition(host: &str, region: &str) -> &'static str {
    if host.ends_with(".amazonaws.com.cn") || region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The KMS statement for `key` as `--kms-key` takes it (key ARN, alias ARN,
/// `alias/NAME` or key ID), used only through ECR. Grants need the key's ARN:
/// an alias is matched by `kms:ResourceAliases` instead.
fn kms_statement(key: &str, partition: &str, region: &str, account: &str) -> Result<Statement> {
    let key = key.trim();
    let (resource, alias) = if let Some(rest) = key.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID or …:alias/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        match parts.as_slice() {
            [_, "kms", _, _, id] if id.starts_with("key/") => (key.to_string(), None),
            [p, "kms", r, a, name] if name.starts_with("alias/") => {
                (format!("arn:{p}:kms:{r}:{a}:key/*"), Some(name.to_string()))
            }
            _ => bail!("invalid --kms-key {key:?}: not a KMS key or alias ARN"),
        }
    } else if key.starts_with("alias/") {
        (
            format!("arn:{partition}:kms:{region}:{account}:key/*"),
            Some(key.to_string()),
        )
    } else if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        (
            format!("arn:{partition}:kms:{region}:{account}:key/{key}"),
            None,
        )
    } else {
        bail!(
            "invalid --kms-key {key:?}: expected a key ARN, a key ID, alias/NAME or an alias ARN"
        );
    };
    let suffix = match partition {
        "aws-cn" => "amazonaws.com.cn",
        _ => "amazonaws.com",
    };
    let mut condition =
        json!({"StringEquals": {"kms:ViaService": format!("ecr.{region}.{suffix}")}});
    if let Some(alias) = alias {
        condition["ForAnyValue:StringEquals"] = json!({"kms:ResourceAliases": alias});
    }
    Ok(Statement {
        sid: "EncryptNewRepositories",
        effect: "Allow",
        action: vec!["kms:CreateGrant", "kms:DescribeKey"],
        resource,
        condition: Some(condition),
    })
}

#[cfg(test)]
#[path = "iam_tests.rs"]
mod tests;
