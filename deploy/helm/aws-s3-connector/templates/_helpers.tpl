{{- define "aws-s3-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aws-s3-connector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aws-s3-connector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "aws-s3-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsx-connect
{{- end -}}

{{- define "aws-s3-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aws-s3-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aws-s3-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aws-s3-connector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the enrollment token Secret is mounted. */}}
{{- define "aws-s3-connector.tokenPath" -}}
/etc/dsx-connector/enrollment/token
{{- end -}}

{{- define "aws-s3-connector.validate" -}}
{{- if not .Values.asset -}}
{{- fail "asset must name the bucket to scan: `bucket` or `bucket/prefix`" -}}
{{- end -}}
{{- if and .Values.monitor.enabled (not .Values.s3.sqsQueueUrl) -}}
{{- fail "monitor.enabled=true consumes S3 event notifications from SQS: set s3.sqsQueueUrl" -}}
{{- end -}}
{{- if and .Values.auth_dsxconnect.enabled (not .Values.auth_dsxconnect.enrollmentSecretName) -}}
{{- fail "auth_dsxconnect.enabled=true needs the enrollment token Secret dsx-connect uses: set auth_dsxconnect.enrollmentSecretName (and auth_dsxconnect.enrollmentKey; see examples/secrets/auth-enrollment-secret.yaml)" -}}
{{- end -}}
{{- if and .Values.auth_dsxconnect.enabled (not .Values.auth_dsxconnect.enrollmentKey) -}}
{{- fail "auth_dsxconnect.enrollmentKey must name the key inside the enrollment Secret" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled=true needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key (and ca.crt), e.g. from cert-manager" -}}
{{- end -}}
{{- end -}}
