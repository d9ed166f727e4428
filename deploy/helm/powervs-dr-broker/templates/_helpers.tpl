{{- define "drbroker.fullname" -}}
{{- printf "%s-powervs-dr-broker" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drbroker.selectorLabels" -}}
app.kubernetes.io/name: powervs-dr-broker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "drbroker.labels" -}}
{{ include "drbroker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "drbroker.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Where each secret value comes from: an existing Secret the operator made, or this chart's Secret. */}}
{{- define "drbroker.credentialsSecret" -}}
{{- .Values.credentials.existingSecret | default (include "drbroker.fullname" .) -}}
{{- end -}}
{{- define "drbroker.databaseRef" -}}
{{- if .Values.database.existingSecret -}}
{name: {{ .Values.database.existingSecret | quote }}, key: {{ .Values.database.existingSecretKey | quote }}}
{{- else -}}
{name: {{ include "drbroker.fullname" . | quote }}, key: database-url}
{{- end -}}
{{- end -}}
{{- define "drbroker.dashboardRef" -}}
{{- if .Values.dashboard.existingSecret -}}
{name: {{ .Values.dashboard.existingSecret | quote }}, key: {{ .Values.dashboard.existingSecretKey | quote }}}
{{- else -}}
{name: {{ include "drbroker.fullname" . | quote }}, key: dashboard-secret}
{{- end -}}
{{- end -}}

{{/* Whether this chart's own Secret has anything to hold. */}}
{{- define "drbroker.ownSecret" -}}
{{- if or (not .Values.credentials.existingSecret) (not .Values.database.existingSecret) (not .Values.dashboard.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/* Refuse, at install time and naming every value to set, what would crash in the pods or split the replicas. */}}
{{- define "drbroker.validate" -}}
{{- $errors := list -}}
{{- if not (or .Values.database.url .Values.database.existingSecret) -}}
{{- $errors = append $errors "database: set database.url (postgresql://...) or database.existingSecret (replicas share one PostgreSQL database)" -}}
{{- end -}}
{{- $kp := .Values.kek.keyprotect -}}
{{- $keyprotect := or $kp.instanceId $kp.rootKeyId $kp.apikeySecret -}}
{{- $keks := 0 -}}
{{- if .Values.kek.existingSecret }}{{ $keks = add1 $keks }}{{ end -}}
{{- if $keyprotect }}{{ $keks = add1 $keks }}{{ end -}}
{{- if .Values.kek.fromEnv }}{{ $keks = add1 $keks }}{{ end -}}
{{- if ne (int $keks) 1 -}}
{{- $errors = append $errors "kek: set exactly one of kek.existingSecret (a Secret holding kek.json), kek.keyprotect.{instanceId,rootKeyId,apikeySecret} or kek.fromEnv=true (every replica must share one key-encryption key)" -}}
{{- else if and $keyprotect (not (and $kp.instanceId $kp.rootKeyId $kp.apikeySecret)) -}}
{{- $errors = append $errors "kek.keyprotect: instanceId, rootKeyId and apikeySecret are all required" -}}
{{- end -}}
{{- if not (or .Values.credentials.existingSecret .Values.credentials.username) -}}
{{- $errors = append $errors "credentials: set credentials.username (a password, or none to generate one) or credentials.existingSecret" -}}
{{- end -}}
{{- range .Values.extraEnv -}}
{{- if not .name }}{{ $errors = append $errors "extraEnv: every entry needs a name" }}{{ end -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\n- %s" (join "\n- " $errors)) -}}
{{- end -}}
{{- end -}}

{{/*
The environment of the broker ("serve") or of the migration Job ("migrate"): the chart's variables, minus
any extraEnv replaces, then extraEnv. Call with (dict "root" $ "for" "serve"|"migrate").
*/}}
{{- define "drbroker.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $env := list (dict "name" "DRBROKER_STATE_DIR" "value" "/var/lib/drbroker/state") -}}
{{- $env = append $env (dict "name" "DRBROKER_DATABASE_URL" "valueFrom" (dict "secretKeyRef" (include "drbroker.databaseRef" $root | fromYaml))) -}}
{{- if eq .for "serve" -}}
{{- $creds := include "drbroker.credentialsSecret" $root -}}
{{- $env = append $env (dict "name" "DRBROKER_USERNAME" "valueFrom" (dict "secretKeyRef" (dict "name" $creds "key" "username"))) -}}
{{- $env = append $env (dict "name" "DRBROKER_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" $creds "key" "password"))) -}}
{{- $env = append $env (dict "name" "DRBROKER_DASHBOARD_SECRET" "valueFrom" (dict "secretKeyRef" (include "drbroker.dashboardRef" $root | fromYaml))) -}}
{{- if $v.kek.existingSecret -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK" "value" "local") -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK_FILE" "value" "/etc/drbroker/kek/kek.json") -}}
{{- else if $v.kek.keyprotect.rootKeyId -}}
{{- $kp := $v.kek.keyprotect -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK" "value" "keyprotect") -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK_KEYPROTECT_URL" "value" $kp.url) -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK_INSTANCE_ID" "value" $kp.instanceId) -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK_ROOT_KEY_ID" "value" $kp.rootKeyId) -}}
{{- $env = append $env (dict "name" "DRBROKER_KEK_APIKEY" "valueFrom" (dict "secretKeyRef" (dict "name" $kp.apikeySecret "key" $kp.apikeySecretKey))) -}}
{{- end -}}
{{- end -}}
{{- $replaced := dict -}}
{{- range $v.extraEnv }}{{ $_ := set $replaced .name true }}{{ end -}}
{{- $out := list -}}
{{- range $env }}{{ if not (hasKey $replaced .name) }}{{ $out = append $out . }}{{ end }}{{ end -}}
{{- concat $out $v.extraEnv | toYaml -}}
{{- end -}}
