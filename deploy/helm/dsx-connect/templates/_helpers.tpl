{{/* Names and labels. */}}
{{- define "dsx-connect.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "dsx-connect.fullname" -}}
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

{{- define "dsx-connect.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "dsx-connect.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "dsx-connect.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsx-connect.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dsx-connect.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "dsx-connect.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "dsx-connect.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "dsx-connect.builtinRedis" -}}
{{- if not (or .Values.redis.external.url .Values.redis.external.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/*
Checks that need more than the schema: fail early, with the value to set, rather than render pods
that cannot start.
*/}}
{{- define "dsx-connect.validate" -}}
{{- $auth := index .Values "dsx-connect-api" "auth" -}}
{{- if $auth.enabled -}}
{{- if not $auth.enrollment.secretName -}}
{{- fail "dsx-connect-api.auth.enabled=true needs the enrollment token Secret: create it (see examples/secrets/auth-enrollment-secret.yaml; generate a token with `dsx-connect admin generate-token`) and set dsx-connect-api.auth.enrollment.secretName (and .key). There is no default token." -}}
{{- end -}}
{{- if not $auth.enrollment.key -}}
{{- fail "dsx-connect-api.auth.enrollment.key must name the key inside the enrollment Secret" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.redis.external.url .Values.redis.external.existingSecret -}}
{{- fail "set redis.external.url or redis.external.existingSecret, not both" -}}
{{- end -}}
{{- if and (eq .Values.scanner.kind "dsxa") (not .Values.scanner.dsxa.baseUrl) -}}
{{- fail "scanner.kind=dsxa needs scanner.dsxa.baseUrl (the DSXA scanner's URL, e.g. http://dsxa-scanner:5000)" -}}
{{- end -}}
{{- if and .Values.syslog.enabled (not .Values.syslog.host) -}}
{{- fail "syslog.enabled=true needs syslog.host" -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled=true needs tls.secretName: a kubernetes.io/tls Secret with tls.crt and tls.key (and ca.crt), e.g. from cert-manager" -}}
{{- end -}}
{{- if and (or .Values.tls.requireClientCert .Values.tls.clientCertToConnectors) (not .Values.tls.enabled) -}}
{{- fail "tls.requireClientCert and tls.clientCertToConnectors need tls.enabled=true" -}}
{{- end -}}
{{- end -}}

{{/* Where mounted Secrets appear inside the containers. */}}
{{- define "dsx-connect.paths" -}}
enrollment: /etc/dsx-connect/enrollment/token
extraTokens: /etc/dsx-connect/enrollment-extra/tokens
operator: /etc/dsx-connect/operator/tokens
secretKey: /etc/dsx-connect/secret-key/key
blocklist: /etc/dsx-connect/blocklist/sha256.txt
tls: /etc/dsx-connect/tls
scannerCa: /etc/dsx-connect/scanner-ca/ca.crt
syslogTls: /etc/dsx-connect/syslog-tls
{{- end -}}

{{/*
Environment shared by the API and the workers: store, scanner, workers and the auth settings that
both roles read (both validate the token configuration at start-up, and the workers sign their
calls to connectors with keys decrypted by the same secret key). Call with
(dict "root" $ "operator" true|false): only the API gets the operator tokens.
*/}}
{{- define "dsx-connect.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $auth := index $root.Values "dsx-connect-api" "auth" -}}
{{- $paths := fromYaml (include "dsx-connect.paths" $root) -}}
- name: DSXCONNECT_LISTEN
  value: "0.0.0.0:8586"
- name: DSXCONNECT_APP_ENV
  value: {{ $v.appEnv | quote }}
- name: DSXCONNECT_LOG_LEVEL
  value: {{ $v.logLevel | quote }}
- name: DSXCONNECT_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
{{- if $v.redis.external.existingSecret }}
- name: DSXCONNECT_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.external.existingSecret }}
      key: {{ $v.redis.external.existingSecretKey }}
{{- else if $v.redis.external.url }}
- name: DSXCONNECT_REDIS_URL
  value: {{ $v.redis.external.url | quote }}
{{- else }}
- name: DSXCONNECT_REDIS_URL
  value: {{ printf "redis://%s-redis:6379/0" (include "dsx-connect.fullname" $root) | quote }}
{{- end }}
- name: DSXCONNECT_SCANNER__KIND
  value: {{ $v.scanner.kind | quote }}
{{- if eq $v.scanner.kind "dsxa" }}
- name: DSXCONNECT_SCANNER__BASE_URL
  value: {{ $v.scanner.dsxa.baseUrl | quote }}
- name: DSXCONNECT_SCANNER__VERIFY_TLS
  value: {{ $v.scanner.dsxa.verifyTls | toString | quote }}
{{- if $v.scanner.dsxa.caBundle.secretName }}
- name: DSXCONNECT_SCANNER__CA_BUNDLE
  value: {{ $paths.scannerCa }}
{{- end }}
{{- with $v.scanner.dsxa.authToken.secretName }}
- name: DSXCONNECT_SCANNER__AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.scanner.dsxa.authToken.key }}
{{- end }}
{{- else if $v.scanner.blocklist }}
- name: DSXCONNECT_SCANNER__BLOCKLIST_FILE
  value: {{ $paths.blocklist }}
{{- end }}
- name: DSXCONNECT_SCANNER__TIMEOUT_SECONDS
  value: {{ $v.scanner.timeoutSeconds | int64 | quote }}
- name: DSXCONNECT_SCANNER__MAX_INFLIGHT
  value: {{ $v.scanner.maxInflight | int64 | quote }}
- name: DSXCONNECT_SCANNER__MAX_FILE_SIZE_BYTES
  value: {{ $v.scanner.maxFileSizeBytes | int64 | quote }}
- name: DSXCONNECT_WORKERS__LEASE_SECONDS
  value: {{ $v.worker.leaseSeconds | int64 | quote }}
- name: DSXCONNECT_WORKERS__SCAN_REQUEST_MAX_RETRIES
  value: {{ $v.worker.scanRequestMaxRetries | int64 | quote }}
- name: DSXCONNECT_RESULTS_DB__RETAIN
  value: {{ $v.resultsRetain | int64 | quote }}
{{- if $v.syslog.enabled }}
- name: DSXCONNECT_SYSLOG__ENABLED
  value: "true"
- name: DSXCONNECT_SYSLOG__HOST
  value: {{ $v.syslog.host | quote }}
- name: DSXCONNECT_SYSLOG__PORT
  value: {{ $v.syslog.port | int64 | quote }}
- name: DSXCONNECT_SYSLOG__TRANSPORT
  value: {{ $v.syslog.transport | quote }}
{{- if eq $v.syslog.transport "tls" }}
- name: DSXCONNECT_SYSLOG__TLS_INSECURE
  value: {{ $v.syslog.tls.insecure | toString | quote }}
{{- if $v.syslog.tls.secretName }}
- name: DSXCONNECT_SYSLOG__TLS_CA_FILE
  value: {{ printf "%s/ca.crt" $paths.syslogTls }}
{{- if $v.syslog.tls.clientCert }}
- name: DSXCONNECT_SYSLOG__TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $paths.syslogTls }}
- name: DSXCONNECT_SYSLOG__TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $paths.syslogTls }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
- name: DSXCONNECT_USE_TLS
  value: "true"
- name: DSXCONNECT_TLS_CERTFILE
  value: {{ printf "%s/tls.crt" $paths.tls }}
- name: DSXCONNECT_TLS_KEYFILE
  value: {{ printf "%s/tls.key" $paths.tls }}
{{- if $v.tls.requireClientCert }}
- name: DSXCONNECT_TLS_CLIENT_CA
  value: {{ printf "%s/ca.crt" $paths.tls }}
{{- end }}
{{- if $v.tls.trustCaForConnectors }}
- name: DSXCONNECT_CONNECTORS__CA_BUNDLE
  value: {{ printf "%s/ca.crt" $paths.tls }}
{{- end }}
{{- if $v.tls.clientCertToConnectors }}
- name: DSXCONNECT_CONNECTORS__TLS_CLIENT_CERTFILE
  value: {{ printf "%s/tls.crt" $paths.tls }}
- name: DSXCONNECT_CONNECTORS__TLS_CLIENT_KEYFILE
  value: {{ printf "%s/tls.key" $paths.tls }}
{{- end }}
{{- end }}
- name: DSXCONNECT_AUTH__ENABLED
  value: {{ $auth.enabled | toString | quote }}
{{- if $auth.enabled }}
- name: DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILE
  value: {{ $paths.enrollment }}
{{- if $auth.enrollment.extraTokens }}
- name: DSXCONNECT_AUTH__ENROLLMENT_TOKEN_FILES
  value: {{ $paths.extraTokens }}
{{- end }}
{{- if and .operator $auth.operator.secretName }}
- name: DSXCONNECT_AUTH__ADMIN_TOKENS_FILE
  value: {{ $paths.operator }}
{{- end }}
- name: DSXCONNECT_AUTH__HMAC_MAX_SKEW
  value: {{ $auth.hmacMaxSkew | int64 | quote }}
- name: DSXCONNECT_AUTH__REGISTER_RATE_PER_MINUTE
  value: {{ $auth.registerRatePerMinute | int64 | quote }}
{{- end }}
- name: DSXCONNECT_AUTH__BREAK_GLASS
  value: {{ $auth.breakGlass | toString | quote }}
{{- if $auth.secretKey.secretName }}
- name: DSXCONNECT_AUTH__SECRET_KEY_FILE
  value: {{ $paths.secretKey }}
{{- end }}
{{- end -}}

{{/*
Volumes for the Secrets above, projected key by key (no subPath: the kubelet only refreshes whole
volume mounts, and the refresh is what makes rotation restart-free). Same dict as dsx-connect.env.
*/}}
{{- define "dsx-connect.volumes" -}}
{{- $root := .root -}}
{{- $auth := index $root.Values "dsx-connect-api" "auth" -}}
- name: tmp
  emptyDir: {}
{{- if $auth.enabled }}
- name: enrollment
  secret:
    secretName: {{ $auth.enrollment.secretName }}
    items:
      - key: {{ $auth.enrollment.key }}
        path: token
{{- if $auth.enrollment.extraTokens }}
- name: enrollment-extra
  secret:
    secretName: {{ include "dsx-connect.fullname" $root }}-enrollment-extra
    items:
      - key: tokens
        path: tokens
{{- end }}
{{- if and .operator $auth.operator.secretName }}
- name: operator
  secret:
    secretName: {{ $auth.operator.secretName }}
    items:
      - key: {{ $auth.operator.key }}
        path: tokens
{{- end }}
{{- end }}
{{- if $auth.secretKey.secretName }}
- name: secret-key
  secret:
    secretName: {{ $auth.secretKey.secretName }}
    items:
      - key: {{ $auth.secretKey.key }}
        path: key
{{- end }}
{{- if and (ne $root.Values.scanner.kind "dsxa") $root.Values.scanner.blocklist }}
- name: blocklist
  configMap:
    name: {{ include "dsx-connect.fullname" $root }}-blocklist
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ $root.Values.tls.secretName }}
{{- end }}
{{- if and (eq $root.Values.scanner.kind "dsxa") $root.Values.scanner.dsxa.caBundle.secretName }}
- name: scanner-ca
  secret:
    secretName: {{ $root.Values.scanner.dsxa.caBundle.secretName }}
    items:
      - key: {{ $root.Values.scanner.dsxa.caBundle.key }}
        path: ca.crt
{{- end }}
{{- if and $root.Values.syslog.enabled (eq $root.Values.syslog.transport "tls") $root.Values.syslog.tls.secretName }}
- name: syslog-tls
  secret:
    secretName: {{ $root.Values.syslog.tls.secretName }}
{{- end }}
{{- end -}}

{{- define "dsx-connect.volumeMounts" -}}
{{- $root := .root -}}
{{- $auth := index $root.Values "dsx-connect-api" "auth" -}}
{{- $paths := fromYaml (include "dsx-connect.paths" $root) -}}
- name: tmp
  mountPath: /tmp
{{- if $auth.enabled }}
- name: enrollment
  mountPath: {{ dir $paths.enrollment }}
  readOnly: true
{{- if $auth.enrollment.extraTokens }}
- name: enrollment-extra
  mountPath: {{ dir $paths.extraTokens }}
  readOnly: true
{{- end }}
{{- if and .operator $auth.operator.secretName }}
- name: operator
  mountPath: {{ dir $paths.operator }}
  readOnly: true
{{- end }}
{{- end }}
{{- if $auth.secretKey.secretName }}
- name: secret-key
  mountPath: {{ dir $paths.secretKey }}
  readOnly: true
{{- end }}
{{- if and (ne $root.Values.scanner.kind "dsxa") $root.Values.scanner.blocklist }}
- name: blocklist
  mountPath: {{ dir $paths.blocklist }}
  readOnly: true
{{- end }}
{{- if $root.Values.tls.enabled }}
- name: tls
  mountPath: {{ $paths.tls }}
  readOnly: true
{{- end }}
{{- if and (eq $root.Values.scanner.kind "dsxa") $root.Values.scanner.dsxa.caBundle.secretName }}
- name: scanner-ca
  mountPath: {{ dir $paths.scannerCa }}
  readOnly: true
{{- end }}
{{- if and $root.Values.syslog.enabled (eq $root.Values.syslog.transport "tls") $root.Values.syslog.tls.secretName }}
- name: syslog-tls
  mountPath: {{ $paths.syslogTls }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* One Deployment per role. Call with (dict "root" $ "role" "api"|"worker"). */}}
{{- define "dsx-connect.deployment" -}}
{{- $root := .root -}}
{{- $role := .role -}}
{{- $cfg := index $root.Values $role -}}
{{- $withOperator := eq $role "api" -}}
{{- include "dsx-connect.validate" $root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "dsx-connect.fullname" $root }}-{{ $role }}
  labels:
    {{- include "dsx-connect.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  {{- if not $cfg.autoscaling.enabled }}
  replicas: {{ $cfg.replicas }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "dsx-connect.selectorLabels" $root | nindent 6 }}
      app.kubernetes.io/component: {{ $role }}
  template:
    metadata:
      labels:
        {{- include "dsx-connect.selectorLabels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ $role }}
      {{- $blocklist := and (ne $root.Values.scanner.kind "dsxa") $root.Values.scanner.blocklist }}
      {{- if or $cfg.podAnnotations $blocklist }}
      annotations:
        {{- with $cfg.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- if $blocklist }}
        # The blocklist is read at start-up: a new one rolls the pods.
        checksum/blocklist: {{ toJson $root.Values.scanner.blocklist | sha256sum }}
        {{- end }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "dsx-connect.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      # Workers get longer to finish the scans in flight after SIGTERM.
      terminationGracePeriodSeconds: {{ ternary 60 30 (eq $role "worker") }}
      containers:
        - name: dsx-connect-{{ $role }}
          image: {{ include "dsx-connect.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["serve"]
          env:
            - name: DSXCONNECT_ROLE
              value: {{ $role }}
            {{- include "dsx-connect.env" (dict "root" $root "operator" $withOperator) | nindent 12 }}
            {{- with $cfg.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: http
              containerPort: 8586
              protocol: TCP
          livenessProbe:
            httpGet:
              path: /dsx-connect/api/v1/healthz
              port: http
              {{- if $root.Values.tls.enabled }}
              scheme: HTTPS
              {{- end }}
            initialDelaySeconds: 5
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /dsx-connect/api/v1/readyz
              port: http
              {{- if $root.Values.tls.enabled }}
              scheme: HTTPS
              {{- end }}
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml $cfg.resources | nindent 12 }}
          volumeMounts:
            {{- include "dsx-connect.volumeMounts" (dict "root" $root "operator" $withOperator) | nindent 12 }}
      volumes:
        {{- include "dsx-connect.volumes" (dict "root" $root "operator" $withOperator) | nindent 8 }}
      {{- with $cfg.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $cfg.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* A HorizontalPodAutoscaler for one role. Same dict as dsx-connect.deployment. */}}
{{- define "dsx-connect.hpa" -}}
{{- $root := .root -}}
{{- $cfg := index $root.Values .role -}}
{{- if $cfg.autoscaling.enabled -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "dsx-connect.fullname" $root }}-{{ .role }}
  labels:
    {{- include "dsx-connect.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .role }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "dsx-connect.fullname" $root }}-{{ .role }}
  minReplicas: {{ $cfg.autoscaling.minReplicas }}
  maxReplicas: {{ $cfg.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $cfg.autoscaling.targetCPUUtilizationPercentage }}
{{- end -}}
{{- end -}}
