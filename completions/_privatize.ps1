
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'privatize' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'privatize'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'privatize' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials')
            [CompletionResult]::new('sync-image', 'sync-image', [CompletionResultType]::ParameterValue, 'Copy images (every platform, exact bytes) into the target registry')
            [CompletionResult]::new('refresh-secrets', 'refresh-secrets', [CompletionResultType]::ParameterValue, 'Refresh ECR credentials in managed Secrets that expire soon')
            [CompletionResult]::new('gen-certs', 'gen-certs', [CompletionResultType]::ParameterValue, 'Create the webhook''s CA and serving certificate and patch the caBundle')
            [CompletionResult]::new('install', 'install', [CompletionResultType]::ParameterValue, 'Render and server-side apply every object privatize needs')
            [CompletionResult]::new('uninstall', 'uninstall', [CompletionResultType]::ParameterValue, 'Remove privatize from a cluster, the webhook configuration first')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write shell completions and man pages (for packagers and CI)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'privatize;serve' {
            [CompletionResult]::new('--https-port', '--https-port', [CompletionResultType]::ParameterName, 'HTTPS port for admission reviews')
            [CompletionResult]::new('--http-port', '--http-port', [CompletionResultType]::ParameterName, 'Plain-HTTP port for /healthz, /readyz and /metrics')
            [CompletionResult]::new('--tls-cert-path', '--tls-cert-path', [CompletionResultType]::ParameterName, 'Serving certificate file (PEM); re-read when it changes')
            [CompletionResult]::new('--tls-key-path', '--tls-key-path', [CompletionResultType]::ParameterName, 'Serving key file (PEM); re-read when it changes')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'Serving certificate as PEM text (wins over --tls-cert-path)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'Serving key as PEM text (wins over --tls-key-path)')
            [CompletionResult]::new('--client-ca-file', '--client-ca-file', [CompletionResultType]::ParameterName, 'CA file (PEM): both webhooks then refuse, in the TLS handshake, every caller without a client certificate signed by it (the apiserver presents one through its AdmissionConfiguration). Read at start')
            [CompletionResult]::new('--tls-secret', '--tls-secret', [CompletionResultType]::ParameterName, 'The TLS Secret in serve''s namespace (POD_NAMESPACE) holding the serving certificate: serve renews it before it expires, a new CA and certificate, after the webhooks'' caBundle trusts the new CA. Unset: no renewal (outside a cluster, or when something else manages the Secret) [default: none]')
            [CompletionResult]::new('--tls-renew-before', '--tls-renew-before', [CompletionResultType]::ParameterName, 'Renew the serving certificate in --tls-secret once it has less than this left')
            [CompletionResult]::new('--tls-renew-check-interval', '--tls-renew-check-interval', [CompletionResultType]::ParameterName, 'How often --tls-secret is looked at (after a failed look, at most every minute)')
            [CompletionResult]::new('--webhook-config', '--webhook-config', [CompletionResultType]::ParameterName, 'The MutatingWebhookConfiguration whose webhooks'' caBundle must trust the renewed certificate')
            [CompletionResult]::new('--target-registry', '--target-registry', [CompletionResultType]::ParameterName, 'Target registry with an optional prefix: REGISTRY[/PREFIX]')
            [CompletionResult]::new('--swap-policy', '--swap-policy', [CompletionResultType]::ParameterName, 'What a pod whose image is not mirrored yet gets')
            [CompletionResult]::new('--tag-drift', '--tag-drift', [CompletionResultType]::ParameterName, 'What a pod of a mirrored tag whose source tag now points elsewhere gets: its source tag is re-read (a manifest HEAD) at most once per --tag-recheck-interval per tag; pods keep starting from the current copy, ungated')
            [CompletionResult]::new('--pin-digests', '--pin-digests', [CompletionResultType]::ParameterName, 'Rewrite a tag whose copy is in the mirror to `target:tag@sha256:…` of that copy, so every replica of a rollout runs the same bytes (a gated pod keeps the tag: its copy is not there yet)')
            [CompletionResult]::new('--platforms', '--platforms', [CompletionResultType]::ParameterName, 'Platforms a copy Job copies of a multi-platform tag: `all`, `auto` (those of the cluster''s nodes, from their kubernetes.io/os and kubernetes.io/arch labels: serve then watches Nodes, and a node of a new platform gets the tags in use copied again with it) or OS/ARCH[/VARIANT],... (OS/ARCH is every variant). Digest-pinned references always get every platform: filtering would change their digest')
            [CompletionResult]::new('--tag-recheck-interval', '--tag-recheck-interval', [CompletionResultType]::ParameterName, 'How long a tag''s re-read source digest is trusted (e.g. `1h`, `15m`)')
            [CompletionResult]::new('--exclude', '--exclude', [CompletionResultType]::ParameterName, 'Registries or image globs never rewritten (comma-separated); the target is always excluded')
            [CompletionResult]::new('--exclude-namespaces', '--exclude-namespaces', [CompletionResultType]::ParameterName, 'Namespaces (globs) whose pods are never rewritten')
            [CompletionResult]::new('--include-registries', '--include-registries', [CompletionResultType]::ParameterName, 'Only rewrite images from these registries (comma-separated); all when empty')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Log and count what would change, change nothing')
            [CompletionResult]::new('--copy-job-namespace', '--copy-job-namespace', [CompletionResultType]::ParameterName, 'Namespace of the copy Jobs')
            [CompletionResult]::new('--copy-job-image', '--copy-job-image', [CompletionResultType]::ParameterName, 'Image of the copy Jobs [default: the image `serve` runs, from the downward API]')
            [CompletionResult]::new('--copy-job-service-account-name', '--copy-job-service-account-name', [CompletionResultType]::ParameterName, 'Service account of the copy Jobs')
            [CompletionResult]::new('--copy-job-backoff-limit', '--copy-job-backoff-limit', [CompletionResultType]::ParameterName, 'backoffLimit of the copy Jobs')
            [CompletionResult]::new('--copy-job-completion', '--copy-job-completion', [CompletionResultType]::ParameterName, 'completions of the copy Jobs')
            [CompletionResult]::new('--require-pull-secret', '--require-pull-secret', [CompletionResultType]::ParameterName, 'Rewrite a pod only in a namespace enabled for ECR credentials, where serve first makes sure the managed pull Secret exists (ECR targets outside AWS, whose nodes cannot pull the mirror otherwise); elsewhere the pod is left unchanged, with a warning')
            [CompletionResult]::new('--credential-namespaces', '--credential-namespaces', [CompletionResultType]::ParameterName, 'Namespaces (globs, comma-separated) whose managed Secrets this serve writes logins into, among those labelled for ECR credentials (several installations in one cluster, tests)')
            [CompletionResult]::new('--pull-secret-name', '--pull-secret-name', [CompletionResultType]::ParameterName, 'Name of the managed pull Secret added to rewritten pods in ECR-enabled namespaces')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)')
            [CompletionResult]::new('--plain-http', '--plain-http', [CompletionResultType]::ParameterName, 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification')
            [CompletionResult]::new('--authfile', '--authfile', [CompletionResultType]::ParameterName, 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]')
            [CompletionResult]::new('--src-creds', '--src-creds', [CompletionResultType]::ParameterName, 'Source registry credentials as USER:PASSWORD (overrides the authfile)')
            [CompletionResult]::new('--dest-creds', '--dest-creds', [CompletionResultType]::ParameterName, 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)')
            [CompletionResult]::new('--target-kind', '--target-kind', [CompletionResultType]::ParameterName, 'Kind of the target registry')
            [CompletionResult]::new('--listen-address', '--listen-address', [CompletionResultType]::ParameterName, 'Address both ports listen on (`0.0.0.0`, `::`, `127.0.0.1`)')
            [CompletionResult]::new('--admission-budget', '--admission-budget', [CompletionResultType]::ParameterName, 'Time one admission may take; past it a pod is allowed unchanged (with a warning) and a Secret is denied')
            [CompletionResult]::new('--tls-reload-interval', '--tls-reload-interval', [CompletionResultType]::ParameterName, 'How often the certificate files are read to notice a rotated certificate')
            [CompletionResult]::new('--header-read-timeout', '--header-read-timeout', [CompletionResultType]::ParameterName, 'Time a client has for the TLS handshake and for each request''s headers (HTTP/1.1: counted from the end of the previous request)')
            [CompletionResult]::new('--body-read-timeout', '--body-read-timeout', [CompletionResultType]::ParameterName, 'Time a client has to send a whole request body (408 past it)')
            [CompletionResult]::new('--review-memory-budget', '--review-memory-budget', [CompletionResultType]::ParameterName, 'Memory all admission reviews in flight may hold together, across connections: request bytes, then the parsed review as charged while it is read (a small JSON object can become kilobytes). A review that does not fit now gets 429 at once (the apiserver applies the webhook''s failurePolicy); one that alone would need more gets 413. Units: KiB, MiB, GiB')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'A connection with no request in flight and no bytes moving for this long is closed (an idle HTTP/1.1 connection already closes after --header-read-timeout)')
            [CompletionResult]::new('--shutdown-delay', '--shutdown-delay', [CompletionResultType]::ParameterName, 'On SIGTERM, /readyz fails this long before connections close, so endpoints drop the pod first; the listeners then keep answering late callers (each connection once) until none has been open for 2 s (at most this delay)')
            [CompletionResult]::new('--shutdown-timeout', '--shutdown-timeout', [CompletionResultType]::ParameterName, 'After the delay, the drain (late callers, requests in flight) gets this long')
            [CompletionResult]::new('--presence-cache-ttl', '--presence-cache-ttl', [CompletionResultType]::ParameterName, 'How long a "present" answer from the target registry is trusted (a pruned repository is noticed after this)')
            [CompletionResult]::new('--sweep-interval', '--sweep-interval', [CompletionResultType]::ParameterName, 'How often every gated pod is looked at again (catches missed Job events)')
            [CompletionResult]::new('--gate-timeout', '--gate-timeout', [CompletionResultType]::ParameterName, 'A pod gated longer than this gets its original images back and is released')
            [CompletionResult]::new('--max-copy-jobs', '--max-copy-jobs', [CompletionResultType]::ParameterName, 'Copy Jobs running at once, in all; more wait (their pods stay gated, the gate timeout still applies)')
            [CompletionResult]::new('--max-copy-jobs-per-namespace', '--max-copy-jobs-per-namespace', [CompletionResultType]::ParameterName, 'Copy Jobs running at once for pods of one namespace (its share of --max-copy-jobs)')
            [CompletionResult]::new('--max-images-per-pod', '--max-images-per-pod', [CompletionResultType]::ParameterName, 'Distinct images to mirror one pod may have; a pod with more is allowed unchanged, with a warning')
            [CompletionResult]::new('--private-source-namespaces', '--private-source-namespaces', [CompletionResultType]::ParameterName, 'Namespaces (globs, comma-separated) whose pods may have images mirrored that cannot be read anonymously; elsewhere such an image is left unchanged [default: none]')
            [CompletionResult]::new('--copy-job-active-deadline', '--copy-job-active-deadline', [CompletionResultType]::ParameterName, 'activeDeadlineSeconds of the copy Jobs')
            [CompletionResult]::new('--copy-job-ttl', '--copy-job-ttl', [CompletionResultType]::ParameterName, 'ttlSecondsAfterFinished of the copy Jobs')
            [CompletionResult]::new('--source-credentials-secret', '--source-credentials-secret', [CompletionResultType]::ParameterName, 'A kubernetes.io/dockerconfigjson Secret in the copy-Job namespace, mounted as every copy Job''s DOCKER_CONFIG (source credentials; a pod''s own imagePullSecrets are never used)')
            [CompletionResult]::new('--copy-job-pod-template', '--copy-job-pod-template', [CompletionResultType]::ParameterName, 'Partial pod spec (YAML or JSON) merged into every copy Job''s pod; only placement and credential fields are taken: nodeSelector, tolerations, affinity, priorityClassName, imagePullSecrets, hostNetwork, dnsPolicy, volumes (no hostPath), the copy container''s resources, env, envFrom, volumeMounts')
            [CompletionResult]::new('--scan-on-push', '--scan-on-push', [CompletionResultType]::ParameterName, 'Scan images on push in new ECR repositories')
            [CompletionResult]::new('--tag-mutability', '--tag-mutability', [CompletionResultType]::ParameterName, 'Tag mutability of new ECR repositories')
            [CompletionResult]::new('--kms-key', '--kms-key', [CompletionResultType]::ParameterName, 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset')
            [CompletionResult]::new('--repository-tag', '--repository-tag', [CompletionResultType]::ParameterName, 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set')
            [CompletionResult]::new('--repository-policy', '--repository-policy', [CompletionResultType]::ParameterName, 'Repository policy (JSON text) applied to new repositories')
            [CompletionResult]::new('--lifecycle-policy', '--lifecycle-policy', [CompletionResultType]::ParameterName, 'Lifecycle policy (JSON text) applied to new repositories')
            [CompletionResult]::new('--reconcile-repositories', '--reconcile-repositories', [CompletionResultType]::ParameterName, 'Also re-apply these settings to existing repositories that drifted')
            [CompletionResult]::new('--copy-referrers', '--copy-referrers', [CompletionResultType]::ParameterName, 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign''s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways')
            [CompletionResult]::new('--require-referrers', '--require-referrers', [CompletionResultType]::ParameterName, 'Fail an image''s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;sync-image' {
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Target registry with an optional path prefix: REGISTRY[/PREFIX]. Each source goes to `<REGISTRY>/<PREFIX>/<source-host>/<path>`')
            [CompletionResult]::new('--target', '--target', [CompletionResultType]::ParameterName, 'Exact target reference (one source only), instead of the naming rule; wins over ECR_REGISTRY')
            [CompletionResult]::new('--jobs', '--jobs', [CompletionResultType]::ParameterName, 'Blobs transferred at once')
            [CompletionResult]::new('--retries', '--retries', [CompletionResultType]::ParameterName, 'Attempts for each transfer on transient failures (connection reset, 429, 5xx)')
            [CompletionResult]::new('--platforms', '--platforms', [CompletionResultType]::ParameterName, 'Copy only these platforms (OS/ARCH[/VARIANT], comma-separated); refused for digest-pinned sources')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Result format on stdout')
            [CompletionResult]::new('--progress', '--progress', [CompletionResultType]::ParameterName, 'Progress bars')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)')
            [CompletionResult]::new('--plain-http', '--plain-http', [CompletionResultType]::ParameterName, 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification')
            [CompletionResult]::new('--authfile', '--authfile', [CompletionResultType]::ParameterName, 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]')
            [CompletionResult]::new('--src-creds', '--src-creds', [CompletionResultType]::ParameterName, 'Source registry credentials as USER:PASSWORD (overrides the authfile)')
            [CompletionResult]::new('--dest-creds', '--dest-creds', [CompletionResultType]::ParameterName, 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)')
            [CompletionResult]::new('--target-kind', '--target-kind', [CompletionResultType]::ParameterName, 'Kind of the target registry')
            [CompletionResult]::new('--scan-on-push', '--scan-on-push', [CompletionResultType]::ParameterName, 'Scan images on push in new ECR repositories')
            [CompletionResult]::new('--tag-mutability', '--tag-mutability', [CompletionResultType]::ParameterName, 'Tag mutability of new ECR repositories')
            [CompletionResult]::new('--kms-key', '--kms-key', [CompletionResultType]::ParameterName, 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset')
            [CompletionResult]::new('--repository-tag', '--repository-tag', [CompletionResultType]::ParameterName, 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set')
            [CompletionResult]::new('--repository-policy', '--repository-policy', [CompletionResultType]::ParameterName, 'Repository policy (JSON text) applied to new repositories')
            [CompletionResult]::new('--lifecycle-policy', '--lifecycle-policy', [CompletionResultType]::ParameterName, 'Lifecycle policy (JSON text) applied to new repositories')
            [CompletionResult]::new('--reconcile-repositories', '--reconcile-repositories', [CompletionResultType]::ParameterName, 'Also re-apply these settings to existing repositories that drifted')
            [CompletionResult]::new('--copy-referrers', '--copy-referrers', [CompletionResultType]::ParameterName, 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign''s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways')
            [CompletionResult]::new('--require-referrers', '--require-referrers', [CompletionResultType]::ParameterName, 'Fail an image''s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)')
            [CompletionResult]::new('--summary-file', '--summary-file', [CompletionResultType]::ParameterName, 'When every image is copied, write one line of counts to FILE (`images=N referrers_copied=N referrers_skipped=N`); copy Jobs write it to their termination message, which serve reads for its metrics')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the SOURCE -> TARGET mapping only: no network, no credentials')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;refresh-secrets' {
            [CompletionResult]::new('--refresh-before', '--refresh-before', [CompletionResultType]::ParameterName, 'Refresh credentials that expire within this duration (e.g. `6h`, `90m`, `1h 30m`)')
            [CompletionResult]::new('--ensure', '--ensure', [CompletionResultType]::ParameterName, 'First create the managed pull Secret in every enabled namespace that lacks one')
            [CompletionResult]::new('--pull-secret-name', '--pull-secret-name', [CompletionResultType]::ParameterName, 'Name of the managed pull Secret created by --ensure')
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Only these namespaces (comma-separated or repeated) [default: every enabled namespace]')
            [CompletionResult]::new('--concurrency', '--concurrency', [CompletionResultType]::ParameterName, 'Secrets refreshed at once')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'How long to wait, per Secret, for serve to write the fresh login after it was asked to (serve writes within about a second)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Summary format on stdout')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Refresh every managed Secret, whatever its expiry')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;gen-certs' {
            [CompletionResult]::new('--service', '--service', [CompletionResultType]::ParameterName, 'Service name the certificate is for')
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace of the service')
            [CompletionResult]::new('--san', '--san', [CompletionResultType]::ParameterName, 'Extra subject alternative name (DNS name or IP; repeatable)')
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Write ca.crt, tls.crt and tls.key into this directory')
            [CompletionResult]::new('--secret', '--secret', [CompletionResultType]::ParameterName, 'Write a kubernetes.io/tls Secret of this name in --namespace')
            [CompletionResult]::new('--webhook-config', '--webhook-config', [CompletionResultType]::ParameterName, 'Patch caBundle of every webhook in this MutatingWebhookConfiguration')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Rotate even when the current certificate is still valid')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;install' {
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace to install into')
            [CompletionResult]::new('--image', '--image', [CompletionResultType]::ParameterName, 'Container image for the server, the Jobs and the CronJob')
            [CompletionResult]::new('--webhook-url', '--webhook-url', [CompletionResultType]::ParameterName, 'Register this base URL for the webhooks instead of the Service (out-of-cluster development); its host joins the certificate''s SANs')
            [CompletionResult]::new('--target-registry', '--target-registry', [CompletionResultType]::ParameterName, 'Target registry the webhook mirrors into: REGISTRY[/PREFIX]')
            [CompletionResult]::new('--webhook-service-account-annotation', '--webhook-service-account-annotation', [CompletionResultType]::ParameterName, 'Annotation KEY=VALUE on serve''s ServiceAccount privatize-webhook (repeatable): its AWS identity, pull-only on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-webhook` for IRSA (EKS Pod Identity needs no annotation); see --iam-policies')
            [CompletionResult]::new('--copy-job-service-account-annotation', '--copy-job-service-account-annotation', [CompletionResultType]::ParameterName, 'Annotation KEY=VALUE on the copy Jobs'' ServiceAccount privatize (repeatable): their AWS identity, push and repository creation on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-copy-job`; serve never passes its own identity to them')
            [CompletionResult]::new('--refresh-service-account-annotation', '--refresh-service-account-annotation', [CompletionResultType]::ParameterName, 'Annotation KEY=VALUE on the refresh CronJob''s ServiceAccount privatize-refresh (repeatable); refresh-secrets calls no AWS API, so it needs no role')
            [CompletionResult]::new('--service-account-annotation', '--service-account-annotation', [CompletionResultType]::ParameterName, 'Removed (it put one identity, push rights included, on every account): refused, naming the three flags above')
            [CompletionResult]::new('--kms-key', '--kms-key', [CompletionResultType]::ParameterName, 'KMS key (ARN, key ID or alias) new ECR repositories are encrypted with: set on serve, which passes it to the copy Jobs, and allowed to the copy Jobs by --iam-policies [default: AES256]')
            [CompletionResult]::new('--source-credentials-secret', '--source-credentials-secret', [CompletionResultType]::ParameterName, 'A kubernetes.io/dockerconfigjson Secret in --namespace that every copy Job mounts as its DOCKER_CONFIG: credentials for private sources and Docker Hub rate limits (create it yourself)')
            [CompletionResult]::new('--copy-job-pod-template', '--copy-job-pod-template', [CompletionResultType]::ParameterName, 'Partial pod spec (YAML or JSON) merged into every copy Job''s pod, validated here and stored in a ConfigMap serve mounts (see `serve --copy-job-pod-template`)')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of extra CA certificates for registries (repeatable): stored in the ConfigMap privatize-ca that serve and every copy Job mount')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Replicas of the webhook server; 0 runs none in the cluster (serve runs elsewhere, registered with --webhook-url)')
            [CompletionResult]::new('--credential-namespaces', '--credential-namespaces', [CompletionResultType]::ParameterName, 'Namespaces (comma-separated) where privatize may read and write managed pull Secrets: each gets a RoleBinding of the ClusterRole privatize-credentials; `*` binds it cluster-wide instead. Elsewhere no privatize account can read or write a Secret [default: none]')
            [CompletionResult]::new('--exclude-namespaces', '--exclude-namespaces', [CompletionResultType]::ParameterName, 'Namespaces (globs, comma-separated) whose pods serve never rewrites; the install namespace is always added. Entries without glob characters are also left out of the pod webhook''s namespaceSelector, so the apiserver does not call serve for them [default: kube-system]')
            [CompletionResult]::new('--platforms', '--platforms', [CompletionResultType]::ParameterName, 'Platforms serve''s copy Jobs copy of a multi-platform tag (serve''s `--platforms`, set on its container when not `all`): `all`, `auto` (the cluster''s nodes'' platforms: only then does serve''s ClusterRole get `list` and `watch` on nodes) or OS/ARCH[/VARIANT],...')
            [CompletionResult]::new('--env', '--env', [CompletionResultType]::ParameterName, 'Env var KEY=VALUE of serve''s container (repeatable): a `serve` setting by its env name (see `serve --help`), or an AWS setting such as AWS_REGION or AWS_ENDPOINT_URL (region, endpoint, STS, FIPS, dual-stack and retry settings reach the copy Jobs too; identity variables never do). Names install sets itself are refused, naming the flag that sets them')
            [CompletionResult]::new('--aws-credentials-secret', '--aws-credentials-secret', [CompletionResultType]::ParameterName, 'A Secret in --namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and an optional AWS_SESSION_TOKEN): serve''s own AWS keys outside AWS, pull-only. Never passed to the copy Jobs: give them theirs with --copy-job-pod-template')
            [CompletionResult]::new('--wait-timeout', '--wait-timeout', [CompletionResultType]::ParameterName, 'Seconds to wait for the Deployment to become available')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Print the manifests as YAML instead of applying them')
            [CompletionResult]::new('--iam-policies', '--iam-policies', [CompletionResultType]::ParameterName, 'Print the minimal IAM policies (JSON) of serve, the copy Jobs and the refresh CronJob for --target-registry (an ECR host, with its prefix) and --kms-key; contacts no cluster')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Do not wait for the Deployment to become available')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;uninstall' {
            [CompletionResult]::new('--namespace', '--namespace', [CompletionResultType]::ParameterName, 'Namespace privatize was installed into')
            [CompletionResult]::new('--target-registry', '--target-registry', [CompletionResultType]::ParameterName, 'Target registry the installation mirrors to, REGISTRY[/PREFIX]: gated pods'' images under it are set back to their originals [default: read from serve''s Deployment]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('--webhook-only', '--webhook-only', [CompletionResultType]::ParameterName, 'Delete only the MutatingWebhookConfiguration and release the pods still gated (what the Helm chart''s pre-delete hook runs)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;generate' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Directory that receives `completions/` and `man/`')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log line format: `text` for people, `json` for log collectors')
            [CompletionResult]::new('--log-level', '--log-level', [CompletionResultType]::ParameterName, 'Level of privatize''s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'privatize;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials')
            [CompletionResult]::new('sync-image', 'sync-image', [CompletionResultType]::ParameterValue, 'Copy images (every platform, exact bytes) into the target registry')
            [CompletionResult]::new('refresh-secrets', 'refresh-secrets', [CompletionResultType]::ParameterValue, 'Refresh ECR credentials in managed Secrets that expire soon')
            [CompletionResult]::new('gen-certs', 'gen-certs', [CompletionResultType]::ParameterValue, 'Create the webhook''s CA and serving certificate and patch the caBundle')
            [CompletionResult]::new('install', 'install', [CompletionResultType]::ParameterValue, 'Render and server-side apply every object privatize needs')
            [CompletionResult]::new('uninstall', 'uninstall', [CompletionResultType]::ParameterValue, 'Remove privatize from a cluster, the webhook configuration first')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write shell completions and man pages (for packagers and CI)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'privatize;help;serve' {
            break
        }
        'privatize;help;sync-image' {
            break
        }
        'privatize;help;refresh-secrets' {
            break
        }
        'privatize;help;gen-certs' {
            break
        }
        'privatize;help;install' {
            break
        }
        'privatize;help;uninstall' {
            break
        }
        'privatize;help;generate' {
            break
        }
        'privatize;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
