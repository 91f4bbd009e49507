{{/* Names and labels shared by every template. */}}

{{- define "skiff.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "skiff.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "skiff.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "skiff.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component (broker or compactor). */}}
{{- define "skiff.selector" -}}
app.kubernetes.io/name: {{ include "skiff.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "skiff.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "skiff.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "skiff.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "skiff.credentialsSecret" -}}
{{- if .Values.objectStore.credentials.existingSecret -}}
{{- .Values.objectStore.credentials.existingSecret -}}
{{- else if .Values.objectStore.credentials.accessKeyId -}}
{{- printf "%s-object-store" (include "skiff.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Where the log is: the environment brokers and compactors share. */}}
{{- define "skiff.storeEnv" -}}
- name: SKIFF_ETCD_ENDPOINTS
  value: {{ required "etcd.endpoints is required: Skiff keeps its metadata in etcd" .Values.etcd.endpoints | quote }}
- name: SKIFF_ETCD_REQUEST_TIMEOUT_MS
  value: {{ .Values.etcd.requestTimeoutMs | quote }}
- name: SKIFF_OBJECT_STORE_URL
  value: {{ required "objectStore.url is required (s3://bucket/prefix)" .Values.objectStore.url | quote }}
{{- with .Values.objectStore.endpoint }}
- name: SKIFF_S3_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: SKIFF_S3_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: SKIFF_S3_ALLOW_HTTP
  value: {{ .Values.objectStore.allowHttp | quote }}
{{- with (include "skiff.credentialsSecret" .) }}
- name: SKIFF_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.objectStore.credentials.accessKeyIdKey }}
- name: SKIFF_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.objectStore.credentials.secretAccessKeyKey }}
{{- end }}
- name: SKIFF_LOG
  value: {{ .Values.log | quote }}
- name: SKIFF_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}
