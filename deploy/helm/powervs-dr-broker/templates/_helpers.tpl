{{- define "drbroker.name" -}}{{ .Release.Name }}-powervs-dr-broker{{- end -}}
{{- define "drbroker.labels" -}}
app.kubernetes.io/name: powervs-dr-broker
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
