{{/* Chart name, overridable. */}}
{{- define "event-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the release name alone when it already contains the chart name. */}}
{{- define "event-broker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "event-broker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "event-broker.labels" -}}
helm.sh/chart: {{ include "event-broker.chart" . }}
{{ include "event-broker.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "event-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "event-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "event-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "event-broker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "event-broker.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The Secret holding the Redis URL and password: the user's, or the one this chart creates. */}}
{{- define "event-broker.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "event-broker.fullname" .)) }}
{{- end }}

{{- define "event-broker.redisUrlKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretUrlKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{- define "event-broker.redisPasswordKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretPasswordKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{- define "event-broker.sentinelPasswordKey" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.sentinel.existingSecretPasswordKey }}{{ else }}sentinel-password{{ end }}
{{- end }}

{{/* The Secret holding the token GET /metrics asks for: the user's, or the one this chart creates. */}}
{{- define "event-broker.metricsSecretName" -}}
{{- .Values.metrics.existingSecret | default (printf "%s-metrics" (include "event-broker.fullname" .)) }}
{{- end }}

{{- define "event-broker.metricsTokenKey" -}}
{{- if .Values.metrics.existingSecret }}{{ .Values.metrics.existingSecretKey }}{{ else }}metrics-token{{ end }}
{{- end }}

{{/*
The broker's Redis: the same for the broker and the relay, which writes into it.
*/}}
{{- define "event-broker.redisEnv" -}}
{{- if .Values.redis.sentinel.enabled }}
- name: BROKER_REDIS_SENTINELS
  value: {{ join "," .Values.redis.sentinel.hosts | quote }}
- name: BROKER_REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinel.masterSet | quote }}
- name: BROKER_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "event-broker.redisSecretName" . }}
      key: {{ include "event-broker.sentinelPasswordKey" . }}
      optional: true
- name: BROKER_REDIS_SENTINEL_TLS
  value: {{ .Values.redis.sentinel.tls | quote }}
{{- else }}
- name: BROKER_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "event-broker.redisSecretName" . }}
      key: {{ include "event-broker.redisUrlKey" . }}
{{- end }}
{{- if not (kindIs "invalid" .Values.redis.waitReplicas) }}
- name: BROKER_REDIS_WAIT_REPLICAS
  value: {{ .Values.redis.waitReplicas | quote }}
{{- end }}
- name: BROKER_REDIS_WAIT_TIMEOUT_MS
  value: {{ .Values.redis.waitTimeoutMs | quote }}
- name: BROKER_REDIS_ALLOW_EVICTION
  value: {{ .Values.redis.allowEviction | quote }}
- name: BROKER_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "event-broker.redisSecretName" . }}
      key: {{ include "event-broker.redisPasswordKey" . }}
      optional: true
- name: BROKER_REDIS_CLUSTER
  value: {{ .Values.redis.cluster | quote }}
{{- if .Values.redis.tls.enabled }}
- name: BROKER_REDIS_TLS_CA_FILE
  value: /etc/event-broker/redis-ca/{{ .Values.redis.tls.caKey }}
{{- end }}
{{- end }}
