{{/*
Names and labels are the ones `privatize install` uses (src/install/manifests.rs), so the
chart and the CLI render the same objects and either can read what the other made.
*/}}

{{/* Labels on every object: install's three, then commonLabels. */}}
{{- define "privatize.labels" -}}
app.kubernetes.io/managed-by: privatize
app.kubernetes.io/name: privatize
app.kubernetes.io/part-of: privatize
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector of the webhook server's pods (Service, Deployment, PDB, anti-affinity). */}}
{{- define "privatize.selectorLabels" -}}
app.kubernetes.io/component: webhook
app.kubernetes.io/name: privatize
{{- end }}

{{/* Labels of a pod template; call with (dict "root" $ "component" "webhook"). */}}
{{- define "privatize.podLabels" -}}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: privatize
app.kubernetes.io/name: privatize
app.kubernetes.io/part-of: privatize
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The image of every container: repository:tag, or repository@digest. */}}
{{- define "privatize.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* Service accounts: server, copy Jobs (the seed's default name), CronJob. */}}
{{- define "privatize.serverAccount" -}}privatize-webhook{{- end }}
{{- define "privatize.copyJobAccount" -}}privatize{{- end }}
{{- define "privatize.refreshAccount" -}}privatize-refresh{{- end }}

{{/* The TLS Secret the server mounts. */}}
{{- define "privatize.tlsSecretName" -}}
{{- .Values.tls.existingSecret | default "privatize-tls" -}}
{{- end }}

{{/*
Namespaces whose pods are never rewritten, as a JSON list: excludeNamespaces (default
kube-system) plus the release namespace, which is always there.
*/}}
{{- define "privatize.excludeNamespaces" -}}
{{- $list := .Values.excludeNamespaces | default (list "kube-system") -}}
{{- if not (has .Release.Namespace $list) -}}
{{- $list = append $list .Release.Namespace -}}
{{- end -}}
{{- toJson $list -}}
{{- end }}

{{/*
The namespaces the pod webhook's namespaceSelector leaves out, as a JSON list: the literal
(glob-free) entries of the excluded namespaces.
*/}}
{{- define "privatize.podWebhookExcludedNamespaces" -}}
{{- $out := list -}}
{{- range (include "privatize.excludeNamespaces" . | fromJsonArray) -}}
{{- if not (regexMatch "[*?\\[]" .) -}}
{{- $out = append $out . -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/* The host of webhookUrl (which the serving certificate must name), or "". */}}
{{- define "privatize.webhookUrlHost" -}}
{{- with .Values.webhookUrl -}}
{{- $authority := regexReplaceAll "^https://([^/?#]*).*$" . "${1}" -}}
{{- $authority = regexReplaceAll "^(.*@)" $authority "" -}}
{{- if hasPrefix "[" $authority -}}
{{- regexReplaceAll "^\\[([^\\]]*)\\].*$" $authority "${1}" -}}
{{- else -}}
{{- regexReplaceAll ":[0-9]*$" $authority "" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* Fails the render on values install would refuse. */}}
{{- define "privatize.validate" -}}
{{- with .Values.webhookUrl }}
{{- if not (hasPrefix "https://" .) }}
{{- fail (printf "invalid webhookUrl %q: the apiserver only calls https:// webhooks" .) }}
{{- end }}
{{- if not (include "privatize.webhookUrlHost" $) }}
{{- fail (printf "invalid webhookUrl %q: no host" .) }}
{{- end }}
{{- end }}
{{- if and (eq (int .Values.replicaCount) 0) (not .Values.webhookUrl) }}
{{- fail "replicaCount 0 needs webhookUrl: with no server pod the webhooks would call a Service with no endpoints, and the Secret webhooks (failurePolicy Fail) would refuse every managed Secret" }}
{{- end }}
{{- if and .Values.aws.webIdentity.enabled (not .Values.aws.webIdentity.roleArn) }}
{{- fail "aws.webIdentity.enabled needs aws.webIdentity.roleArn" }}
{{- end }}
{{- if and .Values.copyJob.aws.webIdentity.enabled (not .Values.copyJob.aws.webIdentity.roleArn) }}
{{- fail "copyJob.aws.webIdentity.enabled needs copyJob.aws.webIdentity.roleArn" }}
{{- end }}
{{- $platforms := include "privatize.platforms" . }}
{{- if not (has $platforms (list "all" "auto")) }}
{{- range splitList "," $platforms }}
{{- $entry := trim . }}
{{- if and $entry (not (regexMatch "^[a-z0-9_.]+/[a-z0-9_.]+(/[a-z0-9_.]+)?$" $entry)) }}
{{- fail (printf "invalid platforms %q: %q is not OS/ARCH[/VARIANT] (e.g. linux/arm64); use `all`, `auto` or a comma-separated list" $platforms $entry) }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.serviceAccount.annotations }}
{{- fail "serviceAccount.annotations is gone: it put one identity on all three accounts; set serviceAccount.webhook.annotations (serve: pull), serviceAccount.copyJob.annotations (copy Jobs: push) and serviceAccount.refresh.annotations (no AWS identity); `privatize install --iam-policies` prints each role's policy" }}
{{- end }}
{{- end }}

{{/* The platforms setting as install renders it: trimmed, "all" when it names none. */}}
{{- define "privatize.platforms" -}}
{{- $platforms := .Values.platforms | default "all" | toString | trim }}
{{- if regexReplaceAll "[\\s,]" $platforms "" }}{{ $platforms }}{{ else }}all{{ end }}
{{- end }}

{{/* Where the projected web-identity token is mounted. */}}
{{- define "privatize.awsTokenDir" -}}/var/run/secrets/privatize/aws{{- end }}

{{/* serve's AWS env entries (a YAML list, possibly empty): the server only. */}}
{{- define "privatize.awsEnv" -}}
{{- with .Values.aws.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SESSION_TOKEN
      optional: true
{{- end }}
{{- if .Values.aws.webIdentity.enabled }}
- name: AWS_ROLE_ARN
  value: {{ .Values.aws.webIdentity.roleArn | quote }}
- name: AWS_WEB_IDENTITY_TOKEN_FILE
  value: {{ include "privatize.awsTokenDir" . }}/token
{{- end }}
{{- with .Values.aws.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The projected token volume (a YAML list entry) when webIdentity is on. */}}
{{- define "privatize.awsVolume" -}}
{{- if .Values.aws.webIdentity.enabled }}
- name: aws-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .Values.aws.webIdentity.audience | quote }}
          expirationSeconds: {{ int .Values.aws.webIdentity.expirationSeconds }}
          path: token
{{- end }}
{{- end }}

{{/* Its mount (a YAML list entry). */}}
{{- define "privatize.awsVolumeMount" -}}
{{- if .Values.aws.webIdentity.enabled }}
- name: aws-token
  mountPath: {{ include "privatize.awsTokenDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The copy-Job pod template serve reads (YAML text; "" for none): copyJobPodTemplate, with
the copy Jobs' own AWS credentials (copyJob.aws) added to the copy container and a
projected token volume for web identity. serve never passes its own identity on.
*/}}
{{- define "privatize.copyJobPodTemplate" -}}
{{- $t := deepCopy (.Values.copyJobPodTemplate | default dict) -}}
{{- $aws := .Values.copyJob.aws | default dict -}}
{{- $web := $aws.webIdentity | default dict -}}
{{- $env := list -}}
{{- $mounts := list -}}
{{- if $aws.existingSecret -}}
{{- $secret := $aws.existingSecret -}}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" -}}
{{- $env = append $env (dict "name" $key "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" $key))) -}}
{{- end -}}
{{- $env = append $env (dict "name" "AWS_SESSION_TOKEN" "valueFrom" (dict "secretKeyRef" (dict "name" $secret "key" "AWS_SESSION_TOKEN" "optional" true))) -}}
{{- end -}}
{{- if $web.enabled -}}
{{- $dir := include "privatize.awsTokenDir" . -}}
{{- $env = append $env (dict "name" "AWS_ROLE_ARN" "value" $web.roleArn) -}}
{{- $env = append $env (dict "name" "AWS_WEB_IDENTITY_TOKEN_FILE" "value" (printf "%s/token" $dir)) -}}
{{- $mounts = append $mounts (dict "name" "aws-token" "mountPath" $dir "readOnly" true) -}}
{{- $token := dict "audience" $web.audience "expirationSeconds" (int $web.expirationSeconds) "path" "token" -}}
{{- $volume := dict "name" "aws-token" "projected" (dict "sources" (list (dict "serviceAccountToken" $token))) -}}
{{- $_ := set $t "volumes" (append ($t.volumes | default list) $volume) -}}
{{- end -}}
{{- if $env -}}
{{- $containers := $t.containers | default list -}}
{{- $c := dict "name" "sync-image" -}}
{{- with $containers }}{{ $c = first . }}{{ end -}}
{{- $_ := set $c "env" (concat ($c.env | default list) $env) -}}
{{- if $mounts }}{{ $_ := set $c "volumeMounts" (concat ($c.volumeMounts | default list) $mounts) }}{{ end -}}
{{- $_ := set $t "containers" (prepend (rest $containers) $c) -}}
{{- end -}}
{{- if $t }}{{ toYaml $t }}{{ end -}}
{{- end }}

{{/* Env shared by the server and the CronJob, rendered only when not the binary's default. */}}
{{- define "privatize.commonEnv" -}}
{{- if ne .Values.logLevel "info" }}
- name: PRIVATIZE_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}
{{- if ne .Values.pullSecretName "privatize-ecr" }}
- name: PRIVATIZE_PULL_SECRET_NAME
  value: {{ .Values.pullSecretName | quote }}
{{- end }}
{{- end }}

{{/* Pod-level scheduling shared by the server and the CronJob. */}}
{{- define "privatize.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
