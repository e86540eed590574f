{{- define "filesystem-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "filesystem-connector.fullname" -}}
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

{{- define "filesystem-connector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "filesystem-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsx-connect
{{- end -}}

{{- define "filesystem-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "filesystem-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "filesystem-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "filesystem-connector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the enrollment token Secret is mounted. */}}
{{- define "filesystem-connector.tokenPath" -}}
/etc/dsx-connector/enrollment/token
{{- end -}}

{{/* The volume source for scanVolume / quarantineVolume. Call with (dict "root" $ "vol" <values> "suffix" "scan"). */}}
{{- define "filesystem-connector.volumeSource" -}}
{{- if .vol.existingClaim -}}
persistentVolumeClaim:
  claimName: {{ .vol.existingClaim }}
{{- else if .vol.hostPath -}}
hostPath:
  path: {{ .vol.hostPath }}
  type: {{ .vol.hostPathType }}
{{- else -}}
persistentVolumeClaim:
  claimName: {{ include "filesystem-connector.fullname" .root }}-{{ .suffix }}
{{- end -}}
{{- end -}}

{{/* A PVC this chart creates for a volume without existingClaim/hostPath (same dict). */}}
{{- define "filesystem-connector.pvc" -}}
{{- if not (or .vol.existingClaim .vol.hostPath) -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "filesystem-connector.fullname" .root }}-{{ .suffix }}
  labels:
    {{- include "filesystem-connector.labels" .root | nindent 4 }}
  annotations:
    # The files to scan and the quarantined files outlive the release.
    helm.sh/resource-policy: keep
spec:
  accessModes:
    {{- toYaml .vol.create.accessModes | nindent 4 }}
  {{- with .vol.create.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ .vol.create.size }}
{{- end -}}
{{- end -}}

{{- define "filesystem-connector.validate" -}}
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
