# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_privatize_global_optspecs
    string join \n log-format= log-level= h/help V/version
end

function __fish_privatize_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_privatize_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_privatize_using_subcommand
    set -l cmd (__fish_privatize_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c privatize -n "__fish_privatize_needs_command" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_needs_command" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_needs_command" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_needs_command" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "serve" -d 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "sync-image" -d 'Copy images (every platform, exact bytes) into the target registry'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "refresh-secrets" -d 'Refresh ECR credentials in managed Secrets that expire soon'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "gen-certs" -d 'Create the webhook\'s CA and serving certificate and patch the caBundle'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "install" -d 'Render and server-side apply every object privatize needs'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "uninstall" -d 'Remove privatize from a cluster, the webhook configuration first'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "generate" -d 'Write shell completions and man pages (for packagers and CI)'
complete -c privatize -n "__fish_privatize_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l https-port -d 'HTTPS port for admission reviews' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l http-port -d 'Plain-HTTP port for /healthz, /readyz and /metrics' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-cert-path -d 'Serving certificate file (PEM); re-read when it changes' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-key-path -d 'Serving key file (PEM); re-read when it changes' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-cert -d 'Serving certificate as PEM text (wins over --tls-cert-path)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-key -d 'Serving key as PEM text (wins over --tls-key-path)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l client-ca-file -d 'CA file (PEM): both webhooks then refuse, in the TLS handshake, every caller without a client certificate signed by it (the apiserver presents one through its AdmissionConfiguration). Read at start' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-secret -d 'The TLS Secret in serve\'s namespace (POD_NAMESPACE) holding the serving certificate: serve renews it before it expires, a new CA and certificate, after the webhooks\' caBundle trusts the new CA. Unset: no renewal (outside a cluster, or when something else manages the Secret) [default: none]' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-renew-before -d 'Renew the serving certificate in --tls-secret once it has less than this left' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-renew-check-interval -d 'How often --tls-secret is looked at (after a failed look, at most every minute)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l webhook-config -d 'The MutatingWebhookConfiguration whose webhooks\' caBundle must trust the renewed certificate' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l target-registry -d 'Target registry with an optional prefix: REGISTRY[/PREFIX]' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l swap-policy -d 'What a pod whose image is not mirrored yet gets' -r -f -a "gate\t'Private image plus a scheduling gate until the copy lands'
always\t'Private image at once (a pull may fail until the copy lands)'
exists\t'Original image until the copy exists'"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tag-drift -d 'What a pod of a mirrored tag whose source tag now points elsewhere gets: its source tag is re-read (a manifest HEAD) at most once per --tag-recheck-interval per tag; pods keep starting from the current copy, ungated' -r -f -a "ignore\t'Never look'
warn\t'An admission warning, a log line and privatize_tags_drifted_total'
sync\t'As warn, and one copy Job moves the mirror\'s tag to what the source tag is now'"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l pin-digests -d 'Rewrite a tag whose copy is in the mirror to `target:tag@sha256:…` of that copy, so every replica of a rollout runs the same bytes (a gated pod keeps the tag: its copy is not there yet)' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l platforms -d 'Platforms a copy Job copies of a multi-platform tag: `all`, `auto` (those of the cluster\'s nodes, from their kubernetes.io/os and kubernetes.io/arch labels: serve then watches Nodes, and a node of a new platform gets the tags in use copied again with it) or OS/ARCH[/VARIANT],... (OS/ARCH is every variant). Digest-pinned references always get every platform: filtering would change their digest' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tag-recheck-interval -d 'How long a tag\'s re-read source digest is trusted (e.g. `1h`, `15m`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l exclude -d 'Registries or image globs never rewritten (comma-separated); the target is always excluded' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l exclude-namespaces -d 'Namespaces (globs) whose pods are never rewritten' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l include-registries -d 'Only rewrite images from these registries (comma-separated); all when empty' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l dry-run -d 'Log and count what would change, change nothing' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-namespace -d 'Namespace of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-image -d 'Image of the copy Jobs [default: the image `serve` runs, from the downward API]' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-service-account-name -d 'Service account of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-backoff-limit -d 'backoffLimit of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-completion -d 'completions of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l require-pull-secret -d 'Rewrite a pod only in a namespace enabled for ECR credentials, where serve first makes sure the managed pull Secret exists (ECR targets outside AWS, whose nodes cannot pull the mirror otherwise); elsewhere the pod is left unchanged, with a warning' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l credential-namespaces -d 'Namespaces (globs, comma-separated) whose managed Secrets this serve writes logins into, among those labelled for ECR credentials (several installations in one cluster, tests)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l pull-secret-name -d 'Name of the managed pull Secret added to rewritten pods in ECR-enabled namespaces' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l ca-file -d 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l plain-http -d 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l authfile -d 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l src-creds -d 'Source registry credentials as USER:PASSWORD (overrides the authfile)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l dest-creds -d 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l target-kind -d 'Kind of the target registry' -r -f -a "auto\t'ECR when the host is an ECR host (`<account>.dkr.ecr.<region>.amazonaws.com`), a plain registry otherwise'
ecr\t'AWS ECR: repositories are created through the ECR API, login with GetAuthorizationToken'
registry\t'Any OCI registry: auth from a docker `config.json` or `--dest-creds`'"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l listen-address -d 'Address both ports listen on (`0.0.0.0`, `::`, `127.0.0.1`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l admission-budget -d 'Time one admission may take; past it a pod is allowed unchanged (with a warning) and a Secret is denied' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tls-reload-interval -d 'How often the certificate files are read to notice a rotated certificate' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l header-read-timeout -d 'Time a client has for the TLS handshake and for each request\'s headers (HTTP/1.1: counted from the end of the previous request)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l body-read-timeout -d 'Time a client has to send a whole request body (408 past it)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l review-memory-budget -d 'Memory all admission reviews in flight may hold together, across connections: request bytes, then the parsed review as charged while it is read (a small JSON object can become kilobytes). A review that does not fit now gets 429 at once (the apiserver applies the webhook\'s failurePolicy); one that alone would need more gets 413. Units: KiB, MiB, GiB' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l idle-timeout -d 'A connection with no request in flight and no bytes moving for this long is closed (an idle HTTP/1.1 connection already closes after --header-read-timeout)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l shutdown-delay -d 'On SIGTERM, /readyz fails this long before connections close, so endpoints drop the pod first; the listeners then keep answering late callers (each connection once) until none has been open for 2 s (at most this delay)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l shutdown-timeout -d 'After the delay, the drain (late callers, requests in flight) gets this long' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l presence-cache-ttl -d 'How long a "present" answer from the target registry is trusted (a pruned repository is noticed after this)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l sweep-interval -d 'How often every gated pod is looked at again (catches missed Job events)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l gate-timeout -d 'A pod gated longer than this gets its original images back and is released' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l max-copy-jobs -d 'Copy Jobs running at once, in all; more wait (their pods stay gated, the gate timeout still applies)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l max-copy-jobs-per-namespace -d 'Copy Jobs running at once for pods of one namespace (its share of --max-copy-jobs)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l max-images-per-pod -d 'Distinct images to mirror one pod may have; a pod with more is allowed unchanged, with a warning' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l private-source-namespaces -d 'Namespaces (globs, comma-separated) whose pods may have images mirrored that cannot be read anonymously; elsewhere such an image is left unchanged [default: none]' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-active-deadline -d 'activeDeadlineSeconds of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-ttl -d 'ttlSecondsAfterFinished of the copy Jobs' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l source-credentials-secret -d 'A kubernetes.io/dockerconfigjson Secret in the copy-Job namespace, mounted as every copy Job\'s DOCKER_CONFIG (source credentials; a pod\'s own imagePullSecrets are never used)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-job-pod-template -d 'Partial pod spec (YAML or JSON) merged into every copy Job\'s pod; only placement and credential fields are taken: nodeSelector, tolerations, affinity, priorityClassName, imagePullSecrets, hostNetwork, dnsPolicy, volumes (no hostPath), the copy container\'s resources, env, envFrom, volumeMounts' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l scan-on-push -d 'Scan images on push in new ECR repositories' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l tag-mutability -d 'Tag mutability of new ECR repositories' -r -f -a "MUTABLE\t''
IMMUTABLE\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l kms-key -d 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l repository-tag -d 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l repository-policy -d 'Repository policy (JSON text) applied to new repositories' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l lifecycle-policy -d 'Lifecycle policy (JSON text) applied to new repositories' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l reconcile-repositories -d 'Also re-apply these settings to existing repositories that drifted' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l copy-referrers -d 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign\'s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l require-referrers -d 'Fail an image\'s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand serve" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c privatize -n "__fish_privatize_using_subcommand serve" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l to -d 'Target registry with an optional path prefix: REGISTRY[/PREFIX]. Each source goes to `<REGISTRY>/<PREFIX>/<source-host>/<path>`' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l target -d 'Exact target reference (one source only), instead of the naming rule; wins over ECR_REGISTRY' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l jobs -d 'Blobs transferred at once' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l retries -d 'Attempts for each transfer on transient failures (connection reset, 429, 5xx)' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l platforms -d 'Copy only these platforms (OS/ARCH[/VARIANT], comma-separated); refused for digest-pinned sources' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l output -d 'Result format on stdout' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l progress -d 'Progress bars' -r -f -a "auto\t'Bars when stderr is a terminal, log lines otherwise'
always\t'Always draw bars'
never\t'Never draw bars'"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l ca-file -d 'Extra PEM file of CA certificates to trust, added to the OS trust store (repeatable)' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l plain-http -d 'Hosts (HOST[:PORT], port 80 when left out) spoken to over plain HTTP, comma-separated: registries, and the token endpoints or redirect targets they name. Every other request, token realms and redirects included, is HTTPS with verification' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l authfile -d 'Docker `config.json` with registry credentials [default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json]' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l src-creds -d 'Source registry credentials as USER:PASSWORD (overrides the authfile)' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l dest-creds -d 'Target registry credentials as USER:PASSWORD (non-ECR targets; overrides the authfile)' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l target-kind -d 'Kind of the target registry' -r -f -a "auto\t'ECR when the host is an ECR host (`<account>.dkr.ecr.<region>.amazonaws.com`), a plain registry otherwise'
ecr\t'AWS ECR: repositories are created through the ECR API, login with GetAuthorizationToken'
registry\t'Any OCI registry: auth from a docker `config.json` or `--dest-creds`'"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l scan-on-push -d 'Scan images on push in new ECR repositories' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l tag-mutability -d 'Tag mutability of new ECR repositories' -r -f -a "MUTABLE\t''
IMMUTABLE\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l kms-key -d 'KMS key (ARN or alias) to encrypt new repositories with; AES256 when unset' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l repository-tag -d 'Extra tag KEY=VALUE on new repositories (repeatable or comma-separated); `managed-by=privatize` is always set' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l repository-policy -d 'Repository policy (JSON text) applied to new repositories' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l lifecycle-policy -d 'Lifecycle policy (JSON text) applied to new repositories' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l reconcile-repositories -d 'Also re-apply these settings to existing repositories that drifted' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l copy-referrers -d 'Also copy what refers to each copied manifest (signatures, attestations, SBOMs): OCI 1.1 referrers, from the Referrers API or the referrers tag schema, and cosign\'s sha256-<hex>.sig/.att/.sbom tags, recursively, as exact bytes; listed on the target the same two ways' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l require-referrers -d 'Fail an image\'s copy, before any of its tags moves, when one of its referrers cannot be copied or listed (otherwise each is a warning)' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l summary-file -d 'When every image is copied, write one line of counts to FILE (`images=N referrers_copied=N referrers_skipped=N`); copy Jobs write it to their termination message, which serve reads for its metrics' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -l dry-run -d 'Print the SOURCE -> TARGET mapping only: no network, no credentials'
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c privatize -n "__fish_privatize_using_subcommand sync-image" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l refresh-before -d 'Refresh credentials that expire within this duration (e.g. `6h`, `90m`, `1h 30m`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l ensure -d 'First create the managed pull Secret in every enabled namespace that lacks one' -r -f -a "true\t''
false\t''"
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l pull-secret-name -d 'Name of the managed pull Secret created by --ensure' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l namespace -d 'Only these namespaces (comma-separated or repeated) [default: every enabled namespace]' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l concurrency -d 'Secrets refreshed at once' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l wait -d 'How long to wait, per Secret, for serve to write the fresh login after it was asked to (serve writes within about a second)' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l output -d 'Summary format on stdout' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -l force -d 'Refresh every managed Secret, whatever its expiry'
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_using_subcommand refresh-secrets" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l service -d 'Service name the certificate is for' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l namespace -d 'Namespace of the service' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l san -d 'Extra subject alternative name (DNS name or IP; repeatable)' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l out-dir -d 'Write ca.crt, tls.crt and tls.key into this directory' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l secret -d 'Write a kubernetes.io/tls Secret of this name in --namespace' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l webhook-config -d 'Patch caBundle of every webhook in this MutatingWebhookConfiguration' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -l force -d 'Rotate even when the current certificate is still valid'
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_using_subcommand gen-certs" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand install" -l namespace -d 'Namespace to install into' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l image -d 'Container image for the server, the Jobs and the CronJob' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l webhook-url -d 'Register this base URL for the webhooks instead of the Service (out-of-cluster development); its host joins the certificate\'s SANs' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l target-registry -d 'Target registry the webhook mirrors into: REGISTRY[/PREFIX]' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l webhook-service-account-annotation -d 'Annotation KEY=VALUE on serve\'s ServiceAccount privatize-webhook (repeatable): its AWS identity, pull-only on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-webhook` for IRSA (EKS Pod Identity needs no annotation); see --iam-policies' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l copy-job-service-account-annotation -d 'Annotation KEY=VALUE on the copy Jobs\' ServiceAccount privatize (repeatable): their AWS identity, push and repository creation on the mirror, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/privatize-copy-job`; serve never passes its own identity to them' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l refresh-service-account-annotation -d 'Annotation KEY=VALUE on the refresh CronJob\'s ServiceAccount privatize-refresh (repeatable); refresh-secrets calls no AWS API, so it needs no role' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l service-account-annotation -d 'Removed (it put one identity, push rights included, on every account): refused, naming the three flags above' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l kms-key -d 'KMS key (ARN, key ID or alias) new ECR repositories are encrypted with: set on serve, which passes it to the copy Jobs, and allowed to the copy Jobs by --iam-policies [default: AES256]' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l source-credentials-secret -d 'A kubernetes.io/dockerconfigjson Secret in --namespace that every copy Job mounts as its DOCKER_CONFIG: credentials for private sources and Docker Hub rate limits (create it yourself)' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l copy-job-pod-template -d 'Partial pod spec (YAML or JSON) merged into every copy Job\'s pod, validated here and stored in a ConfigMap serve mounts (see `serve --copy-job-pod-template`)' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand install" -l ca-file -d 'PEM file of extra CA certificates for registries (repeatable): stored in the ConfigMap privatize-ca that serve and every copy Job mount' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand install" -l replicas -d 'Replicas of the webhook server; 0 runs none in the cluster (serve runs elsewhere, registered with --webhook-url)' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l credential-namespaces -d 'Namespaces (comma-separated) where privatize may read and write managed pull Secrets: each gets a RoleBinding of the ClusterRole privatize-credentials; `*` binds it cluster-wide instead. Elsewhere no privatize account can read or write a Secret [default: none]' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l exclude-namespaces -d 'Namespaces (globs, comma-separated) whose pods serve never rewrites; the install namespace is always added. Entries without glob characters are also left out of the pod webhook\'s namespaceSelector, so the apiserver does not call serve for them [default: kube-system]' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l platforms -d 'Platforms serve\'s copy Jobs copy of a multi-platform tag (serve\'s `--platforms`, set on its container when not `all`): `all`, `auto` (the cluster\'s nodes\' platforms: only then does serve\'s ClusterRole get `list` and `watch` on nodes) or OS/ARCH[/VARIANT],...' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l env -d 'Env var KEY=VALUE of serve\'s container (repeatable): a `serve` setting by its env name (see `serve --help`), or an AWS setting such as AWS_REGION or AWS_ENDPOINT_URL (region, endpoint, STS, FIPS, dual-stack and retry settings reach the copy Jobs too; identity variables never do). Names install sets itself are refused, naming the flag that sets them' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l aws-credentials-secret -d 'A Secret in --namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and an optional AWS_SESSION_TOKEN): serve\'s own AWS keys outside AWS, pull-only. Never passed to the copy Jobs: give them theirs with --copy-job-pod-template' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l wait-timeout -d 'Seconds to wait for the Deployment to become available' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand install" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand install" -l dry-run -d 'Print the manifests as YAML instead of applying them'
complete -c privatize -n "__fish_privatize_using_subcommand install" -l iam-policies -d 'Print the minimal IAM policies (JSON) of serve, the copy Jobs and the refresh CronJob for --target-registry (an ECR host, with its prefix) and --kms-key; contacts no cluster'
complete -c privatize -n "__fish_privatize_using_subcommand install" -l no-wait -d 'Do not wait for the Deployment to become available'
complete -c privatize -n "__fish_privatize_using_subcommand install" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_using_subcommand install" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -l namespace -d 'Namespace privatize was installed into' -r
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -l target-registry -d 'Target registry the installation mirrors to, REGISTRY[/PREFIX]: gated pods\' images under it are set back to their originals [default: read from serve\'s Deployment]' -r
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -l webhook-only -d 'Delete only the MutatingWebhookConfiguration and release the pods still gated (what the Helm chart\'s pre-delete hook runs)'
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_using_subcommand uninstall" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand generate" -l out-dir -d 'Directory that receives `completions/` and `man/`' -r -F
complete -c privatize -n "__fish_privatize_using_subcommand generate" -l log-format -d 'Log line format: `text` for people, `json` for log collectors' -r -f -a "text\t''
json\t''"
complete -c privatize -n "__fish_privatize_using_subcommand generate" -l log-level -d 'Level of privatize\'s own logs (`error`, `warn`, `info`, `debug`, `trace`, `off`), or a whole filter in `tracing` syntax (e.g. `warn,privatize=debug`)' -r
complete -c privatize -n "__fish_privatize_using_subcommand generate" -s h -l help -d 'Print help'
complete -c privatize -n "__fish_privatize_using_subcommand generate" -s V -l version -d 'Print version'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "serve" -d 'HTTPS admission webhook: rewrite pod images, start copy Jobs, inject ECR credentials'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "sync-image" -d 'Copy images (every platform, exact bytes) into the target registry'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "refresh-secrets" -d 'Refresh ECR credentials in managed Secrets that expire soon'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "gen-certs" -d 'Create the webhook\'s CA and serving certificate and patch the caBundle'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "install" -d 'Render and server-side apply every object privatize needs'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "uninstall" -d 'Remove privatize from a cluster, the webhook configuration first'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "generate" -d 'Write shell completions and man pages (for packagers and CI)'
complete -c privatize -n "__fish_privatize_using_subcommand help; and not __fish_seen_subcommand_from serve sync-image refresh-secrets gen-certs install uninstall generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
