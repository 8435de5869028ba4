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
The Redis environment of both the operator and the gateway: REDIS_PASSWORD from the user's
Secret (external mode), then UNDERSTUDY_REDIS_URL. Kubernetes expands "$(REDIS_PASSWORD)" because
the variable is defined earlier in the same list, so the password never appears in the pod spec;
it must be URL-safe because it is put into the URL as it is.
*/}}
{{- define "understudy.redisEnv" -}}
{{- $redis := .Values.redis -}}
{{- $env := list -}}
{{- if eq $redis.mode "bundled" -}}
{{- $url := printf "redis://%s:6379/0" (include "understudy.redis.fullname" .) -}}
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
The operator's rules on its own kinds and on Events: read and patch the resources (finalizers
live in metadata), write their status, update the finalizers subresources (needed where the
OwnerReferencesPermissionEnforcement admission plugin is on), and record Events in both APIs.
*/}}
{{- define "understudy.operator.rules" -}}
- apiGroups: ["understudy.dev"]
  resources: ["tenants", "scenarios", "chaosprofiles"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["understudy.dev"]
  resources: ["tenants/status", "scenarios/status", "chaosprofiles/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["understudy.dev"]
  resources: ["tenants/finalizers", "scenarios/finalizers", "chaosprofiles/finalizers"]
  verbs: ["update"]
- apiGroups: ["events.k8s.io", ""]
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
{{- if and (not .Values.adminToken.existingSecret) .Values.adminToken.value (lt (len .Values.adminToken.value) 16) -}}
{{- fail "adminToken.value must be at least 16 characters (the gateway refuses shorter tokens)" -}}
{{- end -}}
{{- end -}}
