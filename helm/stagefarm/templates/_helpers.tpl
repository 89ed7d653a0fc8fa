{{/* Names and labels. */}}
{{- define "stagefarm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stagefarm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one part: include "stagefarm.selector" (list . "coordinator") */}}
{{- define "stagefarm.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "stagefarm.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "stagefarm.curveSecret" -}}
{{- .Values.curve.existingSecret | default (printf "%s-curve" (include "stagefarm.fullname" .)) -}}
{{- end -}}

{{- define "stagefarm.coordinatorEndpoint" -}}
tcp://{{ include "stagefarm.fullname" . }}-coordinator:{{ .Values.coordinator.port }}
{{- end -}}

{{- define "stagefarm.cacheEndpoint" -}}
tcp://{{ include "stagefarm.fullname" . }}-cache:{{ .Values.cache.port }}
{{- end -}}

{{/* The daemons' security flags: CURVE keys, or --insecure when asked for. */}}
{{- define "stagefarm.securityArgs" -}}
{{- if .Values.curve.enabled }}
- --curve-keys
- /etc/stagefarm/keys
{{- else if .Values.insecure }}
- --insecure
{{- else }}
{{- fail "curve.enabled is false: set insecure=true to run the farm without authentication" }}
{{- end }}
{{- end -}}

{{/* A probe running `stagefarm health` inside the container: include "stagefarm.probe" (list . "--coordinator" "tcp://127.0.0.1:7700" period) */}}
{{- define "stagefarm.probe" -}}
{{- $ := index . 0 -}}
exec:
  command:
    - stagefarm
    - health
    - {{ index . 1 }}
    - {{ index . 2 | quote }}
    - --timeout
    - "3"
    {{- if and $.Values.curve.enabled (ne (index . 1) "--worker") }}
    - --curve-keys
    - /etc/stagefarm/keys
    {{- end }}
periodSeconds: {{ index . 3 }}
timeoutSeconds: 5
failureThreshold: 3
{{- end -}}

{{- define "stagefarm.metricsArgs" -}}
{{- if .Values.metrics.enabled }}
- --metrics-listen
- 0.0.0.0:{{ .Values.metrics.port }}
{{- end }}
{{- end -}}
