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

{{/* The Kafka listener's security protocol, checked. */}}
{{- define "skiff.protocol" -}}
{{- $p := .Values.security.protocol -}}
{{- if not (has $p (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) -}}
{{- fail (printf "security.protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q" $p) -}}
{{- end -}}
{{- $p -}}
{{- end -}}

{{/* Non-empty when the listener uses TLS (and then a Secret is required). */}}
{{- define "skiff.tls" -}}
{{- if has (include "skiff.protocol" .) (list "SSL" "SASL_SSL") -}}
{{- $_ := required "security.tls.existingSecret is required for SSL and SASL_SSL (a kubernetes.io/tls Secret)" .Values.security.tls.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the HTTP ports serve HTTPS (TLS on, security.tls.https). */}}
{{- define "skiff.https" -}}
{{- if and (include "skiff.tls" .) .Values.security.tls.https -}}
true
{{- end -}}
{{- end -}}

{{/* The HTTP probes' scheme. */}}
{{- define "skiff.probeScheme" -}}
{{- if include "skiff.https" . }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{/* The keystore of the TLS Secret (mounted at /etc/skiff/tls). */}}
{{- define "skiff.keystoreEnv" -}}
- name: SKIFF_SSL_KEYSTORE_LOCATION
  value: /etc/skiff/tls/tls.crt
- name: SKIFF_SSL_KEY_LOCATION
  value: /etc/skiff/tls/tls.key
{{- end -}}

{{/* What each broker advertises: podDNS (its name under the headless Service, which a
certificate can carry) or podIP; `auto` is podDNS with TLS, else podIP. */}}
{{- define "skiff.advertise" -}}
{{- $a := .Values.broker.advertise -}}
{{- if eq $a "auto" -}}
{{- if include "skiff.tls" . }}podDNS{{ else }}podIP{{ end -}}
{{- else if has $a (list "podDNS" "podIP") -}}
{{- $a -}}
{{- else -}}
{{- fail (printf "broker.advertise must be auto, podDNS or podIP, not %q" $a) -}}
{{- end -}}
{{- end -}}

{{/* The brokers' security settings as SKIFF_* variables. */}}
{{- define "skiff.securityEnv" -}}
{{- $protocol := include "skiff.protocol" . -}}
{{- if include "skiff.tls" . }}
{{ include "skiff.keystoreEnv" . }}
{{- if ne .Values.security.tls.clientAuth "none" }}
- name: SKIFF_SSL_CLIENT_AUTH
  value: {{ .Values.security.tls.clientAuth | quote }}
- name: SKIFF_SSL_TRUSTSTORE_LOCATION
  value: /etc/skiff/tls/{{ .Values.security.tls.truststoreKey }}
{{- end }}
{{- end }}
{{ include "skiff.loginEnv" . }}
{{- end -}}

{{/* Users and ACLs as SKIFF_* variables: brokers and compactors check logins alike. */}}
{{- define "skiff.loginEnv" -}}
{{- $protocol := include "skiff.protocol" . -}}
{{- if hasPrefix "SASL_" $protocol }}
- name: SKIFF_SASL_ENABLED_MECHANISMS
  value: {{ .Values.security.sasl.mechanisms | quote }}
{{- with .Values.security.sasl.oauthbearer }}
{{- if .jwksEndpointUrl }}
- name: SKIFF_SASL_OAUTHBEARER_JWKS_ENDPOINT_URL
  value: {{ .jwksEndpointUrl | quote }}
{{- end }}
{{- if .expectedIssuer }}
- name: SKIFF_SASL_OAUTHBEARER_EXPECTED_ISSUER
  value: {{ .expectedIssuer | quote }}
{{- end }}
{{- if .expectedAudience }}
- name: SKIFF_SASL_OAUTHBEARER_EXPECTED_AUDIENCE
  value: {{ .expectedAudience | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.security.authorizer.enabled }}
- name: SKIFF_AUTHORIZER
  value: standard
- name: SKIFF_SUPER_USERS
  value: {{ join ";" .Values.security.authorizer.superUsers | quote }}
- name: SKIFF_ALLOW_EVERYONE_IF_NO_ACL_FOUND
  value: {{ .Values.security.authorizer.allowEveryoneIfNoAclFound | quote }}
{{- end }}
{{- end -}}
