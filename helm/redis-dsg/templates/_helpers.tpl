{{/*
Expand the name of the chart.
*/}}
{{- define "redis-dsg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "redis-dsg.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "redis-dsg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "redis-dsg.labels" -}}
helm.sh/chart: {{ include "redis-dsg.chart" . }}
{{ include "redis-dsg.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of the redis-dsg pods. The in-cluster Redis and the test pod
carry other names so that no selector of the chart ever picks them.
*/}}
{{- define "redis-dsg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "redis-dsg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "redis-dsg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "redis-dsg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the in-cluster Redis (Deployment, Service), when redis.enabled.
*/}}
{{- define "redis-dsg.redisName" -}}
{{- printf "%s-redis" (include "redis-dsg.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the in-cluster Redis.
*/}}
{{- define "redis-dsg.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-redis" (include "redis-dsg.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The effective Redis URL: config.redis.url, else the in-cluster Redis, else a
Service named "redis" in the release namespace.
*/}}
{{- define "redis-dsg.redisUrl" -}}
{{- if .Values.config.redis.url }}
{{- .Values.config.redis.url }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s:6379" (include "redis-dsg.redisName" .) }}
{{- else }}
{{- "redis://redis:6379" }}
{{- end }}
{{- end }}

{{/*
The Redis URL taken apart as a dict: scheme (empty for host:port), host
(host:port, default port 6379), db (string, "0" when absent), tls ("true"
for rediss).
*/}}
{{- define "redis-dsg.redisEndpoint" -}}
{{- $url := include "redis-dsg.redisUrl" . }}
{{- $scheme := "" }}
{{- $host := $url }}
{{- $db := "0" }}
{{- if contains "://" $url }}
{{- $parsed := urlParse $url }}
{{- $scheme = $parsed.scheme }}
{{- $host = $parsed.host }}
{{- $path := trimPrefix "/" $parsed.path }}
{{- if $path }}{{ $db = $path }}{{ end }}
{{- end }}
{{- if not (regexMatch ":[0-9]+$" $host) }}
{{- $host = printf "%s:6379" $host }}
{{- end }}
{{- dict "scheme" $scheme "host" $host "port" (regexFind "[0-9]+$" $host) "db" $db "tls" (ternary "true" "false" (hasPrefix "rediss" $scheme)) | toJson }}
{{- end }}

{{/*
Name of the Secret holding the Redis password, empty when there is none.
*/}}
{{- define "redis-dsg.passwordSecretName" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecret }}
{{- else if .Values.auth.password }}
{{- include "redis-dsg.fullname" . }}
{{- end }}
{{- end }}

{{/*
Key of the password in that Secret.
*/}}
{{- define "redis-dsg.passwordSecretKey" -}}
{{- if .Values.auth.existingSecret }}
{{- .Values.auth.existingSecretPasswordKey }}
{{- else }}
{{- "password" }}
{{- end }}
{{- end }}

{{/*
Where the password Secret is mounted (read-only, the whole volume: a subPath
mount would never see a rotated Secret) and the file the program reads.
*/}}
{{- define "redis-dsg.passwordMountPath" -}}
/var/run/secrets/redis-dsg/auth
{{- end }}

{{- define "redis-dsg.passwordFile" -}}
{{- printf "%s/password" (include "redis-dsg.passwordMountPath" .) }}
{{- end }}

{{/*
Where the TLS Secret is mounted (read-only).
*/}}
{{- define "redis-dsg.tlsMountPath" -}}
/var/run/secrets/redis-dsg/tls
{{- end }}

{{/*
The TLS files mounted from tls.existingSecret, as a JSON list of
{setting, key, path}: the program's setting, the key in the Secret and the
file name under the mount path. Empty list when tls.existingSecret is empty.
*/}}
{{- define "redis-dsg.tlsFiles" -}}
{{- $files := list }}
{{- if .Values.tls.existingSecret }}
{{- with .Values.tls.caKey }}
{{- $files = append $files (dict "setting" "tls_ca_file" "key" . "path" "ca.crt") }}
{{- end }}
{{- with .Values.tls.certKey }}
{{- $files = append $files (dict "setting" "tls_cert_file" "key" . "path" "tls.crt") }}
{{- end }}
{{- with .Values.tls.keyKey }}
{{- $files = append $files (dict "setting" "tls_key_file" "key" . "path" "tls.key") }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/*
The pods' volumes: the ConfigMap, and the password and TLS Secrets when set.
Secret files are 0444: the pods run as a non-root user without fsGroup.
*/}}
{{- define "redis-dsg.volumes" -}}
- name: config
  configMap:
    name: {{ include "redis-dsg.fullname" . }}
{{- with include "redis-dsg.passwordSecretName" . }}
- name: redis-password
  secret:
    secretName: {{ . }}
    # 0444
    defaultMode: 292
    items:
      - key: {{ include "redis-dsg.passwordSecretKey" $ }}
        path: password
{{- end }}
{{- $tlsFiles := include "redis-dsg.tlsFiles" . | fromJsonArray }}
{{- if $tlsFiles }}
- name: redis-tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    # 0444
    defaultMode: 292
    items:
      {{- range $tlsFiles }}
      - key: {{ .key }}
        path: {{ .path }}
      {{- end }}
{{- end }}
{{- end }}

{{/*
The volume mounts of a redis-dsg container (service pods and the test pod).
*/}}
{{- define "redis-dsg.volumeMounts" -}}
- name: config
  mountPath: /etc/redis-dsg
  readOnly: true
{{- if include "redis-dsg.passwordSecretName" . }}
- name: redis-password
  mountPath: {{ include "redis-dsg.passwordMountPath" . }}
  readOnly: true
{{- end }}
{{- if include "redis-dsg.tlsFiles" . | fromJsonArray }}
- name: redis-tls
  mountPath: {{ include "redis-dsg.tlsMountPath" . }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
"true" when KEDA's scaler needs a TriggerAuthentication (a password or TLS
files), else empty.
*/}}
{{- define "redis-dsg.kedaAuth" -}}
{{- if or (include "redis-dsg.passwordSecretName" .) (include "redis-dsg.tlsFiles" . | fromJsonArray) }}true{{ end }}
{{- end }}

{{/*
One TOML value: strings quoted, integral numbers without a fraction (Helm
reads every number as a float), other numbers and booleans as they are.
*/}}
{{- define "redis-dsg.tomlValue" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
Bytes of a Kubernetes memory quantity (resources.limits.memory), as a
decimal string without fraction (fractions of a byte dropped): plain bytes
or a decimal number, optionally with a binary (Ki Mi Gi Ti Pi Ei) or decimal
(k M G T P E) suffix. Anything else (256m is 0.256 bytes, 1e9 an exponent)
fails rendering, naming the value.
*/}}
{{- define "redis-dsg.memoryBytes" -}}
{{- $q := . }}
{{- if kindIs "float64" $q }}
{{- $q = ternary (printf "%.0f" $q) (toString $q) (eq (floor $q) $q) }}
{{- end }}
{{- $q = toString $q | trim }}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$" $q) }}
{{- fail (printf "resources.limits.memory %q: cannot derive config.consumer.maxInFlightBytes (40 %% of the memory limit) from this quantity; write it in bytes or with one of the suffixes Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E (e.g. 256Mi), or set config.consumer.maxInFlightBytes" $q) }}
{{- end }}
{{- $number := regexFind "^[0-9.]+" $q }}
{{- $suffix := trimPrefix $number $q }}
{{- $multipliers := dict "" "1" "Ki" "1024" "Mi" "1048576" "Gi" "1073741824" "Ti" "1099511627776" "Pi" "1125899906842624" "Ei" "1152921504606846976" "k" "1000" "M" "1000000" "G" "1000000000" "T" "1000000000000" "P" "1000000000000000" "E" "1000000000000000000" }}
{{- printf "%.0f" (floor (mulf (float64 $number) (float64 (index $multipliers $suffix)))) }}
{{- end }}

{{/*
consumer.max_in_flight_bytes: config.consumer.maxInFlightBytes when set;
else 40 % of resources.limits.memory, clamped to the program's bounds
(65536-68719476736); else (no memory limit) empty: the program's default.
*/}}
{{- define "redis-dsg.maxInFlightBytes" -}}
{{- $explicit := .Values.config.consumer.maxInFlightBytes }}
{{- if not (kindIs "invalid" $explicit) }}
{{- int64 $explicit }}
{{- else }}
{{- $limit := dig "limits" "memory" "" (.Values.resources | default dict) }}
{{- if not (eq (toString $limit) "") }}
{{- $bytes := include "redis-dsg.memoryBytes" $limit | float64 }}
{{- if ge $bytes 171798691840.0 }}
{{- 68719476736 }}
{{- else }}
{{- max 65536 (div (mul (int64 $bytes) 2) 5) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The TOML configuration file. Values keys are the TOML keys in camelCase;
snakecase turns them back (intervalMs -> interval_ms). config.redis.url is
replaced by the effective URL; other empty strings (optional settings such as
consumer.outputQueue) are left out. [redis] also gets the files mounted from
Secrets (auth.*, tls.*); consumer.max_in_flight_bytes may be derived from
resources.limits.memory (redis-dsg.maxInFlightBytes).
*/}}
{{- define "redis-dsg.configToml" -}}
# redis-dsg configuration rendered by the Helm chart (values: config.*).
# The user name comes from the environment (DSG_REDIS__USERNAME); the
# password and TLS files are Secrets mounted read-only (auth.*, tls.*).
mode = {{ toJson .Values.config.mode }}
{{- range $section := list "http" "redis" "generator" "lease" "consumer" "processor" "shutdown" "errors" "compat" }}
{{- $values := index $.Values.config $section }}
{{- $keys := keys $values }}
{{- if eq $section "consumer" }}
{{- $keys = append $keys "maxInFlightBytes" | uniq }}
{{- end }}

[{{ $section }}]
{{- range $key := $keys | sortAlpha }}
{{- $value := index $values $key }}
{{- if and (eq $section "redis") (eq $key "url") }}
url = {{ include "redis-dsg.redisUrl" $ | toJson }}
{{- else if and (eq $section "consumer") (eq $key "maxInFlightBytes") }}
{{- with include "redis-dsg.maxInFlightBytes" $ }}
{{- if kindIs "invalid" $value }}
# 40 % of resources.limits.memory ({{ include "redis-dsg.memoryBytes" $.Values.resources.limits.memory }} bytes), config.consumer.maxInFlightBytes being unset.
{{- end }}
max_in_flight_bytes = {{ . }}
{{- end }}
{{- else if eq (toString $value) "" }}
{{- /* An empty string is an optional setting left unset. */}}
{{- else }}
{{ snakecase $key }} = {{ include "redis-dsg.tomlValue" $value }}
{{- end }}
{{- end }}
{{- if eq $section "redis" }}
{{- if include "redis-dsg.passwordSecretName" $ }}
# Read again at every (re)connection: a rotated Secret needs no restart.
password_file = {{ include "redis-dsg.passwordFile" $ | toJson }}
{{- end }}
{{- range include "redis-dsg.tlsFiles" $ | fromJsonArray }}
{{ .setting }} = {{ printf "%s/%s" (include "redis-dsg.tlsMountPath" $) .path | toJson }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The environment of a redis-dsg container (service pods and the test pod).
The password is no environment variable: it is a mounted file
(redis-dsg.volumes), so a rotated Secret reaches running pods.
*/}}
{{- define "redis-dsg.env" -}}
- name: DSG_CONFIG
  value: /etc/redis-dsg/config.toml
- name: DSG_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.auth.username }}
- name: DSG_REDIS__USERNAME
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Refuse settings that cannot work, with a message naming them.
*/}}
{{- define "redis-dsg.validate" -}}
{{- if le (mul (int64 .Values.terminationGracePeriodSeconds) 1000) (int64 .Values.config.shutdown.timeoutMs) }}
{{- fail (printf "terminationGracePeriodSeconds (%d s) must exceed config.shutdown.timeoutMs (%d ms): Kubernetes would kill pods before they finish their shutdown" (int64 .Values.terminationGracePeriodSeconds) (int64 .Values.config.shutdown.timeoutMs)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: both would own the Deployment's replica count" }}
{{- end }}
{{- if and .Values.keda.enabled (regexMatch "^rediss?-(sentinel|cluster)://" (include "redis-dsg.redisUrl" .)) }}
{{- fail "keda.enabled supports host:port, redis:// and rediss:// URLs only (the redis lists scaler)" }}
{{- end }}
{{- if and .Values.auth.existingSecret .Values.auth.password }}
{{- fail "set auth.existingSecret or auth.password, not both" }}
{{- end }}
{{- $tls := .Values.tls }}
{{- if and $tls.existingSecret (not (or $tls.caKey $tls.certKey $tls.keyKey)) }}
{{- fail "tls.existingSecret is set but tls.caKey, tls.certKey and tls.keyKey are all empty: name the keys to mount" }}
{{- end }}
{{- if and $tls.existingSecret (ne (empty $tls.certKey) (empty $tls.keyKey)) }}
{{- fail "a client certificate needs both tls.certKey and tls.keyKey (or neither)" }}
{{- end }}
{{- $tlsSettings := list }}
{{- if include "redis-dsg.tlsFiles" . | fromJsonArray }}{{ $tlsSettings = append $tlsSettings "tls.existingSecret" }}{{ end }}
{{- if .Values.config.redis.tlsServerName }}{{ $tlsSettings = append $tlsSettings "config.redis.tlsServerName" }}{{ end }}
{{- if .Values.config.redis.tlsInsecureSkipVerify }}{{ $tlsSettings = append $tlsSettings "config.redis.tlsInsecureSkipVerify" }}{{ end }}
{{- $url := include "redis-dsg.redisUrl" . }}
{{- if and $tlsSettings (not (regexMatch "^rediss(-sentinel|-cluster)?://" $url)) }}
{{- fail (printf "TLS settings (%s) need a rediss:// (or rediss-sentinel://, rediss-cluster://) config.redis.url, not %s" (join ", " $tlsSettings) $url) }}
{{- end }}
{{- end }}

{{/*
Labels of the in-cluster Redis objects: the chart's common labels with the
Redis selector labels in place of the redis-dsg ones.
*/}}
{{- define "redis-dsg.redisLabels" -}}
helm.sh/chart: {{ include "redis-dsg.chart" . }}
{{ include "redis-dsg.redisSelectorLabels" . }}
app.kubernetes.io/component: redis
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
