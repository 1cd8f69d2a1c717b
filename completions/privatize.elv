
use builtin;
use str;

set edit:completion:arg-completer[privatize] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'privatize'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'privatize'= {
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials'
            cand sync-image 'Copy images (every platform, exact bytes) into the target registry'
            cand refresh-secrets 'Refresh ECR credentials in managed Secrets that expire soon'
            cand gen-certs 'Create the webhook''s CA and serving certificate and patch the caBundle'
            cand install 'Render and server-side apply every object privatize needs'
            cand uninstall 'Remove privatize from a cluster, the webhook configuration first'
            cand generate 'Write shell completions and man pages (for packagers and CI)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'privatize;serve'= {
            cand --https-port 'HTTPS port for admission reviews'
            cand --http-port 'Plain-HTTP port for /healthz, /readyz and /metrics'
            cand --tls-cert-path 'Serving certificate file (PEM); re-read when it changes'
            cand --tls-key-path 'Serving key file (PEM); re-read when it changes'
            cand --tls-cert 'Serving certificate as PEM text (wins over --tls-cert-path)'
            cand --tls-key 'Serving key as PEM text (wins over --tls-key-path)'
            cand --client-ca-file 'CA file (PEM): both webhooks then refuse, in the TLS handshake, every caller without a client certificate signed by it (the apiserver presents one through its AdmissionConfiguration). Read at start'
            cand --tls-secret 'The TLS Secret in serve''s namespace (POD_NAMESPACE) holding the serving certificate: serve renews it before it expires, a new CA and certificate, after the webhooks'' caBundle trusts the new CA. Unset: no renewal (outside a cluster, or when something else manages the Secret) [default: none]'
            cand --tls-renew-before 'Renew the serving certificate in --tls-secret once it has less than this left'
            cand --tls-renew-check-interval 'How often --tls-secret is looked at (after a failed look, at most every minute)'
            cand --webhook-config 'The MutatingWebhookConfiguration whose webhooks'' caBundle must trust the renewed certificate'
            cand --target-registry 'Target registry with an optional prefix: REGISTRY[/PREFIX]'
            cand --swap-policy 'What a pod whose image is not mirrored yet gets'
            cand --tag-drift 'What a pod of a mirrored tag whose source tag now points elsewhere gets: its source tag is re-read (a manifest HEAD) at most once per --tag-recheck-interval per tag; pods keep starting from the current copy, ungated'
            cand --pin-digests 'Rewrite a tag whose copy is in the mirror to `target:tag@sha256:…` of that copy, so every replica of a rollout runs the same bytes (a gated pod keeps the tag: its copy is not there yet)'
            cand --platforms 'Platforms a copy Job copies of a multi-platform tag: `all`, `auto` (those of the cluster''s nodes, from their kubernetes.io/os and kubernetes.io/arch labels: serve then watches Nodes, and a node of a new platform gets the tags in use copied again with it) or OS/ARCH[/VARIANT],... (OS/ARCH is every variant). Digest-pinned references always get every platform: filtering would change their digest'
            cand --tag-recheck-interval 'How long a tag''s re-read source digest is trusted (e.g. `1h`, `15m`)'
            cand --exclude 'Registries or image globs never rewritten (comma-separated); the target is always excluded'
            cand --exclude-namespaces 'Namespaces (globs) whose pods are never rewritten'
            cand --include-registries 'Only rewrite images from these registries (comma-separated); all when empty'
            cand --dry-run 'Log and count what would change, change nothing'
            cand --copy-job-namespace 'Namespace of the copy Jobs'
            cand --copy-job-image 'Image of the copy Jobs [default: the image `serve` runs, from the downward API]'
            cand --copy-job-service-account-name 'Service account of the copy Jobs'
            cand --copy-job-backoff-limit 'backoffLimit of the copy Jobs'
            cand --copy-job-completion 'completions of the copy Jobs'
            cand --require-pull-secret 'Rewrite a pod only in a namespace enabled for ECR credentials, where serve first makes sure the managed pull Secret exists (ECR targets outside AWS, whose nodes cannot pull the mirror otherwise); elsewhere the pod is left unchanged, with a warning'
            cand --credential-namespaces 'Namespaces (globs, comma-separated) whose managed Secrets this serve writes logins into, among those labelled for ECR credentials (several installations in one cluster, tests)'
            cand --pull-secret-name 'Name of the managed pull Secret added to rewritten pods in ECR-enabled namespaces'
            cand --ca-file 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)'
            cand --plain-http 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification'
            cand --authfile 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]'
            cand --src-creds 'Source registry credentials as USER:PASSWORD (overrides the authfile)'
            cand --dest-creds 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)'
            cand --target-kind 'Kind of the target registry'
            cand --listen-address 'Address both ports listen on (`0.0.0.0`, `::`, `127.0.0.1`)'
            cand --admission-budget 'Time one admission may take; past it a pod is allowed unchanged (with a warning) and a Secret is denied'
            cand --tls-reload-interval 'How often the certificate files are read to notice a rotated certificate'
            cand --header-read-timeout 'Time a client has for the TLS handshake and for each request''s headers (HTTP/1.1: counted from the end of the previous request)'
            cand --body-read-timeout 'Time a client has to send a whole request body (408 past it)'
            cand --review-memory-budget 'Memory all admission reviews in flight may hold together, across connections: request bytes, then the parsed review as charged while it is read (a small JSON object can become kilobytes). A review that does not fit now gets 429 at once (the apiserver applies the webhook''s failurePolicy); one that alone would need more gets 413. Units: KiB, MiB, GiB'
            cand --idle-timeout 'A connection with no request in flight and no bytes moving for this long is closed (an idle HTTP/1.1 connection already closes after --header-read-timeout)'
            cand --shutdown-delay 'On SIGTERM, /readyz fails this long before connections close, so endpoints drop the pod first; the listeners then keep answering late callers (each connection once) until none has been open for 2 s (at most this delay)'
            cand --shutdown-timeout 'After the delay, the drain (late callers, requests in flight) gets this long'
            cand --presence-cache-ttl 'How long a "present" answer from the target registry is trusted (a pruned repository is noticed after this)'
            cand --sweep-interval 'How often every gated pod is looked at again (catches missed Job events)'
            cand --gate-timeout 'A pod gated longer than this gets its original images back and is released'
            cand --max-copy-jobs 'Copy Jobs running at once, in all; more wait (their pods stay gated, the gate timeout still applies)'
            cand --max-copy-jobs-per-namespace 'Copy Jobs running at once for pods of one namespace (its share of --max-copy-jobs)'
            cand --max-images-per-pod 'Distinct images to mirror one pod may have; a pod with more is allowed unchanged, with a warning'
            cand --private-source-namespaces 'Namespaces (globs, comma-separated) whose pods may have images mirrored that cannot be read anonymously; elsewhere such an image is left unchanged [default: none]'
            cand --copy-job-active-deadline 'activeDeadlineSeconds of the copy Jobs'
            cand --copy-job-ttl 'ttlSecondsAfterFinished of the copy Jobs'
            cand --source-credentials-secret 'A kubernetes.io/dockerconfigjson Secret in the copy-Job namespace, mounted as every copy Job''s DOCKER_CONFIG (source credentials; a pod''s own imagePullSecrets are never used)'
            cand --copy-job-pod-template 'Partial pod spec (YAML or JSON) merged into every copy Job''s pod; only placement and credential fields are taken: nodeSelector, tolerations, affinity, priorityClassName, imagePullSecrets, hostNetwork, dnsPolicy, volumes (no hostPath), the copy container''s resources, env, envFrom, volumeMounts'
            cand --scan-on-push 'Scan images on push in new ECR repositories'
            cand --tag-mutability 'Tag mutability of new ECR repositories'
            cand --kms-key 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset'
            cand --repository-tag 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set'
            cand --repository-policy 'Repository policy (JSON text) applied to new repositories'
            cand --lifecycle-policy 'Lifecycle policy (JSON text) applied to new repositories'
            cand --reconcile-repositories 'Also re-apply these settings to existing repositories that drifted'
            cand --copy-referrers 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign''s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways'
            cand --require-referrers 'Fail an image''s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;sync-image'= {
            cand --to 'Target registry with an optional path prefix: REGISTRY[/PREFIX]. Each source goes to `<REGISTRY>/<PREFIX>/<source-host>/<path>`'
            cand --target 'Exact target reference (one source only), instead of the naming rule; wins over ECR_REGISTRY'
            cand --jobs 'Blobs transferred at once'
            cand --retries 'Attempts for each transfer on transient failures (connection reset, 429, 5xx)'
            cand --platforms 'Copy only these platforms (OS/ARCH[/VARIANT], comma-separated); refused for digest-pinned sources'
            cand --output 'Result format on stdout'
            cand --progress 'Progress bars'
            cand --ca-file 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)'
            cand --plain-http 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification'
            cand --authfile 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]'
            cand --src-creds 'Source registry credentials as USER:PASSWORD (overrides the authfile)'
            cand --dest-creds 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)'
            cand --target-kind 'Kind of the target registry'
            cand --scan-on-push 'Scan images on push in new ECR repositories'
            cand --tag-mutability 'Tag mutability of new ECR repositories'
            cand --kms-key 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset'
            cand --repository-tag 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set'
            cand --repository-policy 'Repository policy (JSON text) applied to new repositories'
            cand --lifecycle-policy 'Lifecycle policy (JSON text) applied to new repositories'
            cand --reconcile-repositories 'Also re-apply these settings to existing repositories that drifted'
            cand --copy-referrers 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign''s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways'
            cand --require-referrers 'Fail an image''s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)'
            cand --summary-file 'When every image is copied, write one line of counts to FILE (`images=N referrers_copied=N referrers_skipped=N`); copy Jobs write it to their termination message, which serve reads for its metrics'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand --dry-run 'Print the SOURCE -> TARGET mapping only: no network, no credentials'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;refresh-secrets'= {
            cand --refresh-before 'Refresh credentials that expire within this duration (e.g. `6h`, `90m`, `1h 30m`)'
            cand --ensure 'First create the managed pull Secret in every enabled namespace that lacks one'
            cand --pull-secret-name 'Name of the managed pull Secret created by --ensure'
            cand --namespace 'Only these namespaces (comma-separated or repeated) [default: every enabled namespace]'
            cand --concurrency 'Secrets refreshed at once'
            cand --wait 'How long to wait, per Secret, for serve to write the fresh login after it was asked to (serve writes within about a second)'
            cand --output 'Summary format on stdout'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand --force 'Refresh every managed Secret, whatever its expiry'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;gen-certs'= {
            cand --service 'Service name the certificate is for'
            cand --namespace 'Namespace of the service'
            cand --san 'Extra subject alternative name (DNS name or IP; repeatable)'
            cand --out-dir 'Write ca.crt, tls.crt and tls.key into this directory'
            cand --secret 'Write a kubernetes.io/tls Secret of this name in --namespace'
            cand --webhook-config 'Patch caBundle of every webhook in this MutatingWebhookConfiguration'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand --force 'Rotate even when the current certificate is still valid'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;install'= {
            cand --namespace 'Namespace to install into'
            cand --image 'Container image for the server, the Jobs and the CronJob'
            cand --webhook-url 'Register this base URL for the webhooks instead of the Service (out-of-cluster development); its host joins the certificate''s SANs'
            cand --target-registry 'Target registry the webhook mirrors into: REGISTRY[/PREFIX]'
            cand --webhook-service-account-annotation 'Annotation KEY=VALUE on serve''s ServiceAccount privatize-webhook (repeatable): its AWS identity, pull-only on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-webhook` for IRSA (EKS Pod Identity needs no annotation); see --iam-policies'
            cand --copy-job-service-account-annotation 'Annotation KEY=VALUE on the copy Jobs'' ServiceAccount privatize (repeatable): their AWS identity, push and repository creation on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-copy-job`; serve never passes its own identity to them'
            cand --refresh-service-account-annotation 'Annotation KEY=VALUE on the refresh CronJob''s ServiceAccount privatize-refresh (repeatable); refresh-secrets calls no AWS API, so it needs no role'
            cand --service-account-annotation 'Removed (it put one identity, push rights included, on every account): refused, naming the three flags above'
            cand --kms-key 'KMS key (ARN, key ID or alias) new ECR repositories are encrypted with: set on serve, which passes it to the copy Jobs, and allowed to the copy Jobs by --iam-policies [default: AES256]'
            cand --source-credentials-secret 'A kubernetes.io/dockerconfigjson Secret in --namespace that every copy Job mounts as its DOCKER_CONFIG: credentials for private sources and Docker Hub rate limits (create it yourself)'
            cand --copy-job-pod-template 'Partial pod spec (YAML or JSON) merged into every copy Job''s pod, validated here and stored in a ConfigMap serve mounts (see `serve --copy-job-pod-template`)'
            cand --ca-file 'PEM file of extra CA certificates for registries (repeatable): stored in the ConfigMap privatize-ca that serve and every copy Job mount'
            cand --replicas 'Replicas of the webhook server; 0 runs none in the cluster (serve runs elsewhere, registered with --webhook-url)'
            cand --credential-namespaces 'Namespaces (comma-separated) where privatize may read and write managed pull Secrets: each gets a RoleBinding of the ClusterRole privatize-credentials; `*` binds it cluster-wide instead. Elsewhere no privatize account can read or write a Secret [default: none]'
            cand --exclude-namespaces 'Namespaces (globs, comma-separated) whose pods serve never rewrites; the install namespace is always added. Entries without glob characters are also left out of the pod webhook''s namespaceSelector, so the apiserver does not call serve for them [default: kube-system]'
            cand --platforms 'Platforms serve''s copy Jobs copy of a multi-platform tag (serve''s `--platforms`, set on its container when not `all`): `all`, `auto` (the cluster''s nodes'' platforms: only then does serve''s ClusterRole get `list` and `watch` on nodes) or OS/ARCH[/VARIANT],...'
            cand --env 'Env var KEY=VALUE of serve''s container (repeatable): a `serve` setting by its env name (see `serve --help`), or an AWS setting such as AWS_REGION or AWS_ENDPOINT_URL (region, endpoint, STS, FIPS, dual-stack and retry settings reach the copy Jobs too; identity variables never do). Names install sets itself are refused, naming the flag that sets them'
            cand --aws-credentials-secret 'A Secret in --namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and an optional AWS_SESSION_TOKEN): serve''s own AWS keys outside AWS, pull-only. Never passed to the copy Jobs: give them theirs with --copy-job-pod-template'
            cand --wait-timeout 'Seconds to wait for the Deployment to become available'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand --dry-run 'Print the manifests as YAML instead of applying them'
            cand --iam-policies 'Print the minimal IAM policies (JSON) of serve, the copy Jobs and the refresh CronJob for --target-registry (an ECR host, with its prefix) and --kms-key; contacts no cluster'
            cand --no-wait 'Do not wait for the Deployment to become available'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;uninstall'= {
            cand --namespace 'Namespace privatize was installed into'
            cand --target-registry 'Target registry the installation mirrors to, REGISTRY[/PREFIX]: gated pods'' images under it are set back to their originals [default: read from serve''s Deployment]'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand --webhook-only 'Delete only the MutatingWebhookConfiguration and release the pods still gated (what the Helm chart''s pre-delete hook runs)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;generate'= {
            cand --out-dir 'Directory that receives `completions/` and `man/`'
            cand --log-format 'Log line format: `text` for people, `json` for log collectors'
            cand --log-level 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'privatize;help'= {
            cand serve 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials'
            cand sync-image 'Copy images (every platform, exact bytes) into the target registry'
            cand refresh-secrets 'Refresh ECR credentials in managed Secrets that expire soon'
            cand gen-certs 'Create the webhook''s CA and serving certificate and patch the caBundle'
            cand install 'Render and server-side apply every object privatize needs'
            cand uninstall 'Remove privatize from a cluster, the webhook configuration first'
            cand generate 'Write shell completions and man pages (for packagers and CI)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'privatize;help;serve'= {
        }
        &'privatize;help;sync-image'= {
        }
        &'privatize;help;refresh-secrets'= {
        }
        &'privatize;help;gen-certs'= {
        }
        &'privatize;help;install'= {
        }
        &'privatize;help;uninstall'= {
        }
        &'privatize;help;generate'= {
        }
        &'privatize;help;help'= {
        }
    ]
    $completions[$command]
}
