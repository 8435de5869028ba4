{{/*
Names, labels, image references and the shared pieces of the pod specs.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "understudy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: fullnameOverride, else "<release>-<chart>" (just the release
name when it already contains the chart name). Kept at 40 characters so that suffixes such as
"-redis-headless" still fit in 63.
*/}}
{{- define "understudy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "name-version" for the helm.sh/chart label. */}}
{{- define "understudy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. Call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "understudy.labels" -}}
helm.sh/chart: {{ include "understudy.chart" .ctx }}
{{ include "understudy.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: understudy
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades. Call with (dict "ctx" $ "component" "gateway"). */}}
{{- define "understudy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "understudy.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* An image reference from {repository, tag, digest}; an empty tag means the appVersion. */}}
{{- define "understudy.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .ctx.Chart.AppVersion $image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "understudy.operator.fullname" -}}
{{- printf "%s-operator" (include "understudy.fullname" .) -}}
{{- end -}}

{{- define "understudy.gateway.fullname" -}}
{{- printf "%s-gateway" (include "understudy.fullname" .) -}}
{{- end -}}

{{- define "understudy.redis.fullname" -}}
{{- printf "%s-redis" (include "understudy.fullname" .) -}}
{{- end -}}

{{- define "understudy.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "understudy.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "understudy.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create -}}
{{- default (include "understudy.gateway.fullname" .) .Values.gateway.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.gateway.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the admin token: the user's, or the chart's. */}}
{{- define "understudy.adminToken.secretName" -}}
{{- default (printf "%s-admin" (include "understudy.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{/* The Secret holding the bundled Redis's password: the user's, or the chart's. */}}
{{- define "understudy.redis.secretName" -}}
{{- default (printf "%s-redis-auth" (include "understudy.fullname" .)) .Values.redis.bundled.auth.existingSecret -}}
{{- end -}}

{{/*
The value of a Secret the chart makes: the given value, else what that Secret already holds in
the cluster (lookup, so upgrades keep it), else 48 random alphanumerics. The result is memoized
for the rest of the render (in .Values.__understudySecrets, a map all templates share), so the
Secret and the pods' checksum annotations agree even on the first install, when the value is
generated. Call with (dict "ctx" $ "name" <Secret name> "key" <key> "value" <given value or "">).
*/}}
{{- define "understudy.secretValue" -}}
{{- $values := .ctx.Values -}}
{{- if not (hasKey $values "__understudySecrets") -}}
{{- $_ := set $values "__understudySecrets" (dict) -}}
{{- end -}}
{{- $cache := get $values "__understudySecrets" -}}
{{- $id := printf "%s/%s" .name .key -}}
{{- if not (hasKey $cache $id) -}}
{{- $value := .value -}}
{{- if not $value -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- $value = index $existing.data .key | b64dec -}}
{{- else -}}
{{- $value = randAlphaNum 48 -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cache $id $value -}}
{{- end -}}
{{- get $cache $id -}}
{{- end -}}

{{/* The admin token the chart stores (only meaningful without adminToken.existingSecret). */}}
{{- define "understudy.adminToken.value" -}}
{{- include "understudy.secretValue" (dict "ctx" . "name" (include "understudy.adminToken.secretName" .) "key" .Values.adminToken.existingSecretKey "value" .Values.adminToken.value) -}}
{{- end -}}

{{/* The bundled Redis's generated password (only meaningful without auth.existingSecret). */}}
{{- define "understudy.redis.password" -}}
{{- include "understudy.secretValue" (dict "ctx" . "name" (include "understudy.redis.secretName" .) "key" .Values.redis.bundled.auth.existingSecretKey "value" "") -}}
{{- end -}}

{{/*
Checksums of the credentials a pod reads, for its checksum/<name> annotations: a change rolls
the pods. For a Secret the chart makes, the SHA-256 of the value (from the same values and lookup
as the Secret itself); for the user's Secret, of its name and key (the chart cannot see the
value: restart the pods yourself after rotating it). "" when the pod reads no such credential.
*/}}
{{- define "understudy.checksum.admin-token" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- printf "secret:%s/%s" .Values.adminToken.existingSecret .Values.adminToken.existingSecretKey | sha256sum -}}
{{- else -}}
{{- include "understudy.adminToken.value" . | sha256sum -}}
{{- end -}}
{{- end -}}

{{- define "understudy.checksum.redis-password" -}}
{{- $redis := .Values.redis -}}
{{- if eq $redis.mode "bundled" -}}
{{- if $redis.bundled.auth.enabled -}}
{{- if $redis.bundled.auth.existingSecret -}}
{{- printf "secret:%s/%s" $redis.bundled.auth.existingSecret $redis.bundled.auth.existingSecretKey | sha256sum -}}
{{- else -}}
{{- include "understudy.redis.password" . | sha256sum -}}
{{- end -}}
{{- end -}}
{{- else if $redis.external.existingSecret -}}
{{- printf "secret:%s/%s" $redis.external.existingSecret $redis.external.existingSecretKey | sha256sum -}}
{{- end -}}
{{- end -}}

{{- define "understudy.checksum.oidc-client-secret" -}}
{{- with .Values.gateway.oidc.clientSecret -}}
{{- if .existingSecret -}}
{{- printf "secret:%s/%s" .existingSecret .existingSecretKey | sha256sum -}}
{{- else if .value -}}
{{- .value | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The checksum/<name> pod annotations for the credentials in .secrets (a list of "admin-token",
"redis-password", "oidc-client-secret"), one per line; nothing for a credential not in use.
Call with (dict "ctx" $ "secrets" (list ...)).
*/}}
{{- define "understudy.checksumAnnotations" -}}
{{- $ctx := .ctx -}}
{{- range $name := .secrets -}}
{{- with include (printf "understudy.checksum.%s" $name) $ctx }}
checksum/{{ $name }}: {{ . }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the OIDC client secret ("" when there is none). */}}
{{- define "understudy.oidc.secretName" -}}
{{- with .Values.gateway.oidc.clientSecret -}}
{{- if .existingSecret -}}
{{- .existingSecret -}}
{{- else if .value -}}
{{- printf "%s-oidc" (include "understudy.fullname" $) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "understudy.leaseName" -}}
{{- default (include "understudy.operator.fullname" .) .Values.operator.leaderElection.leaseName -}}
{{- end -}}

{{/*
The Redis environment of both the operator and the gateway: REDIS_PASSWORD from the bundled
Redis's Secret (the chart's or redis.bundled.auth.existingSecret) or from the user's Secret
(external mode), then UNDERSTUDY_REDIS_URL. Kubernetes expands "$(REDIS_PASSWORD)" because
the variable is defined earlier in the same list, so the password never appears in the pod spec;
it must be URL-safe because it is put into the URL as it is.
*/}}
{{- define "understudy.redisEnv" -}}
{{- $redis := .Values.redis -}}
{{- $env := list -}}
{{- if eq $redis.mode "bundled" -}}
{{- $auth := "" -}}
{{- if $redis.bundled.auth.enabled -}}
{{- $ref := dict "name" (include "understudy.redis.secretName" .) "key" $redis.bundled.auth.existingSecretKey -}}
{{- $env = append $env (dict "name" "REDIS_PASSWORD" "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- $auth = ":$(REDIS_PASSWORD)@" -}}
{{- end -}}
{{- $url := printf "redis://%s%s:6379/0" $auth (include "understudy.redis.fullname" .) -}}
{{- $env = append $env (dict "name" "UNDERSTUDY_REDIS_URL" "value" $url) -}}
{{- else -}}
{{- $ext := $redis.external -}}
{{- $host := required "redis.external.host is required when redis.mode is external" $ext.host -}}
{{- $auth := "" -}}
{{- if $ext.existingSecret -}}
{{- $ref := dict "name" $ext.existingSecret "key" $ext.existingSecretKey -}}
{{- $env = append $env (dict "name" "REDIS_PASSWORD" "valueFrom" (dict "secretKeyRef" $ref)) -}}
{{- $auth = printf "%s:$(REDIS_PASSWORD)@" (default "" $ext.username) -}}
{{- else if $ext.username -}}
{{- $auth = printf "%s@" $ext.username -}}
{{- end -}}
{{- $scheme := ternary "rediss" "redis" $ext.tls -}}
{{- $url := printf "%s://%s%s:%d/%d" $scheme $auth $host (int $ext.port) (int $ext.db) -}}
{{- $env = append $env (dict "name" "UNDERSTUDY_REDIS_URL" "value" $url) -}}
{{- end -}}
{{- toYaml $env -}}
{{- end -}}

{{/*
The operator's rules on its own kinds and on Events, exactly what it uses: it reads and watches
the resources and merge-patches them (finalizers live in metadata; it sets no ownerReferences,
so it needs no rights on the finalizers subresources), merge-patches their status, and records
events.k8s.io/v1 Events (kube-runtime's Recorder creates them and patches repeats).
*/}}
{{- define "understudy.operator.rules" -}}
- apiGroups: ["understudy.dev"]
  resources: ["tenants", "scenarios", "chaosprofiles"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["understudy.dev"]
  resources: ["tenants/status", "scenarios/status", "chaosprofiles/status"]
  verbs: ["patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* prometheus.io/* annotations for a pod serving /metrics on the given port. */}}
{{- define "understudy.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}
{{- end -}}

{{/* Checks on combinations of values that the JSON schema cannot express. */}}
{{- define "understudy.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled: two active operators would fight over Redis and the status fields" -}}
{{- end -}}
{{- with .Values.gateway.autoscaling -}}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) -}}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}
{{- if eq (int .Values.gateway.metrics.port) 8080 -}}
{{- fail "gateway.metrics.port must not be 8080: that is the gateway's data-plane port, and /metrics must stay off it" -}}
{{- end -}}
{{- if and (not .Values.adminToken.existingSecret) .Values.adminToken.value (lt (len .Values.adminToken.value) 16) -}}
{{- fail "adminToken.value must be at least 16 characters (the gateway refuses shorter tokens)" -}}
{{- end -}}
{{- end -}}
