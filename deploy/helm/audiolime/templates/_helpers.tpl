{{/* Chart name, truncated to the 63 characters DNS labels allow. */}}
{{- define "audiolime.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "audiolime.fullname" -}}
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

{{/* <fullname>-<component>; call with (dict "ctx" $ "component" "separator"). */}}
{{- define "audiolime.componentName" -}}
{{- printf "%s-%s" (include "audiolime.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "audiolime.selectorLabels" -}}
app.kubernetes.io/name: {{ include "audiolime.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "audiolime.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "audiolime.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: audiolime
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "tagger"). */}}
{{- define "audiolime.componentSelectorLabels" -}}
{{ include "audiolime.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "audiolime.componentLabels" -}}
{{ include "audiolime.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The ServiceAccount of one component (least privilege: one each, so an IRSA / workload
identity role or an RBAC binding names exactly one component); call with
(dict "ctx" $ "component" "explainer"). serviceAccount.name set: that one account for all. */}}
{{- define "audiolime.serviceAccountName" -}}
{{- $v := .ctx.Values.serviceAccount -}}
{{- if $v.name -}}
{{- $v.name -}}
{{- else if $v.create -}}
{{- printf "%s-%s" (include "audiolime.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* One of our images; call with (dict "ctx" $ "name" "separator" "suffix" ""). */}}
{{/* One of our images: <registry>/audiolime-<name>:<tag><suffix>, or @<digest> when
image.digest.<name> is set (the tag is then left out: the digest names one exact image). */}}
{{- define "audiolime.image" -}}
{{- $registry := include "audiolime.registry" (dict "ctx" .ctx "registry" .ctx.Values.image.registry) -}}
{{- $digest := index (default dict .ctx.Values.image.digest) .name -}}
{{- if $digest -}}
{{- printf "%s/audiolime-%s@%s" $registry .name $digest -}}
{{- else -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- printf "%s/audiolime-%s:%s%s" $registry .name $tag (default "" .suffix) -}}
{{- end -}}
{{- end -}}

{{- define "audiolime.separatorImage" -}}
{{- $suffix := "" -}}
{{- if eq .Values.separator.accelerator "gpu" }}{{ $suffix = .Values.separator.gpu.imageTagSuffix }}{{ end -}}
{{- include "audiolime.image" (dict "ctx" . "name" "separator" "suffix" $suffix) -}}
{{- end -}}

{{/* Pod-level security context shared by every workload. */}}
{{- define "audiolime.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security context shared by every container. */}}
{{- define "audiolime.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* topologySpreadConstraints for one component; call with (dict "ctx" $ "component" "x"). */}}
{{- define "audiolime.topologySpread" -}}
{{- if .ctx.Values.topologySpread.enabled }}
topologySpreadConstraints:
{{- range .ctx.Values.topologySpread.topologyKeys }}
  - maxSkew: {{ $.ctx.Values.topologySpread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: {{ $.ctx.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "audiolime.componentSelectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment common to our servers; call with (dict "ctx" $ "component" "separator"). */}}
{{- define "audiolime.commonEnv" -}}
- name: AUDIOLIME_LOG_LEVEL
  value: {{ .ctx.Values.logLevel | quote }}
- name: AUDIOLIME_GRACE_PERIOD
  value: {{ (index .ctx.Values .component).gracePeriodSeconds | quote }}
- name: HOME
  value: /tmp
{{- with .ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "audiolime-%s" $.component | quote }}
{{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds and the preStop hook of one component; call with
(dict "ctx" $ "component" "separator"). The pod's grace covers preStop + drain + margin. */}}
{{- define "audiolime.terminationGracePeriod" -}}
{{- $s := .ctx.Values.shutdown -}}
{{- add $s.preStopSeconds (index .ctx.Values .component).gracePeriodSeconds $s.marginSeconds -}}
{{- end -}}

{{- define "audiolime.preStop" -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ .Values.shutdown.preStopSeconds | quote }}]
{{- end -}}

{{- define "audiolime.s3Endpoint" -}}
{{- if .Values.s3.endpoint -}}
{{- .Values.s3.endpoint -}}
{{- else if .Values.minio.enabled -}}
{{- printf "http://%s:%v" (include "audiolime.componentName" (dict "ctx" . "component" "minio")) .Values.minio.port -}}
{{- end -}}
{{- end -}}

{{- define "audiolime.minioSecretName" -}}
{{- default (include "audiolime.componentName" (dict "ctx" . "component" "minio")) .Values.minio.existingSecret -}}
{{- end -}}

{{/* The store's own prefixes of each service (src/audiolime/inputs.py RESERVED_PREFIXES; docs/
reliability.md), as the MinIO service users' policies grant them: the separator writes stems/, the
explainer everything else and reads stems/. */}}
{{- define "audiolime.storePrefixes" -}}
{{- if eq .component "separator" -}}
{{- toYaml (list "stems/") -}}
{{- else -}}
{{- toYaml (list "inputs/" "jobs/" "claims/" "queue/" "explanations/" "expiry/" "cache/" "scans/") -}}
{{- end -}}
{{- end -}}

{{/* The MinIO policy of one service (minio.serviceUsers), JSON; (dict "ctx" $ "component" "x"). Objects
under its prefixes: get/put (explainer: delete too); list the bucket only under them (so a missing
key is 404, not 403); the explainer reads stems/; both read the input locations. */}}
{{- define "audiolime.minioPolicy" -}}
{{- $v := .ctx.Values -}}
{{- $prefix := trimAll "/" (default "" $v.s3.prefix) -}}
{{- $keyBase := ternary (printf "%s/" $prefix) "" (ne $prefix "") -}}
{{- $base := printf "%s/%s" $v.s3.bucket $keyBase | trimSuffix "/" -}}
{{- $own := include "audiolime.storePrefixes" . | fromYamlArray -}}
{{- $objects := list -}}
{{- $listed := list -}}
{{- range $own }}
{{- $objects = append $objects (printf "arn:aws:s3:::%s/%s*" $base .) -}}
{{- $listed = append $listed (printf "%s%s*" $keyBase .) -}}
{{- end -}}
{{- $write := list "s3:GetObject" "s3:PutObject" -}}
{{- if eq .component "explainer" }}{{ $write = append $write "s3:DeleteObject" }}{{ end -}}
{{- $read := list -}}
{{- if eq .component "explainer" }}
{{- $read = append $read (printf "arn:aws:s3:::%s/stems/*" $base) -}}
{{- $listed = append $listed (printf "%sstems/*" $keyBase) -}}
{{- end -}}
{{- range default (list $v.s3.bucket) $v.security.inputBuckets }}
{{- $read = append $read (printf "arn:aws:s3:::%s/*" (trimSuffix "/" (trimPrefix "s3://" .))) -}}
{{- end -}}
{{- $statements := list
      (dict "Effect" "Allow" "Action" $write "Resource" $objects)
      (dict "Effect" "Allow" "Action" (list "s3:GetObject") "Resource" $read)
      (dict "Effect" "Allow" "Action" (list "s3:ListBucket") "Resource" (list (printf "arn:aws:s3:::%s" $v.s3.bucket))
            "Condition" (dict "StringLike" (dict "s3:prefix" $listed))) -}}
{{- dict "Version" "2012-10-17" "Statement" $statements | toJson -}}
{{- end -}}

{{/* A service's own MinIO keys (minio.serviceUsers): <fullname>-minio-<component>. */}}
{{- define "audiolime.minioUserSecret" -}}
{{- printf "%s-minio-%s" (include "audiolime.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret with a component's S3 keys: its own (s3.credentials.<component>), else s3.existingSecret. */}}
{{- define "audiolime.s3Secret" -}}
{{- $own := (index .ctx.Values.s3.credentials .component).existingSecret -}}
{{- default .ctx.Values.s3.existingSecret $own -}}
{{- end -}}

{{/* Object-store environment of a component (separator, explainer): --store, --s3-endpoint,
--s3-region, the AWS chain, --input-buckets; call with (dict "ctx" $ "component" "separator"). */}}
{{- define "audiolime.storeEnv" -}}
{{- $secret := include "audiolime.s3Secret" . -}}
{{- $minioUser := include "audiolime.minioUserSecret" . -}}
{{- with .ctx }}
{{- if .Values.s3.enabled }}
- name: AUDIOLIME_STORE
  value: {{ printf "s3://%s/%s" .Values.s3.bucket .Values.s3.prefix | trimSuffix "/" | quote }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- with (include "audiolime.s3Endpoint" .) }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: AUDIOLIME_INPUT_BUCKETS
  value: {{ join "," (default (list .Values.s3.bucket) .Values.security.inputBuckets) | quote }}
{{- if $secret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- else if and .Values.minio.enabled .Values.minio.serviceUsers.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $minioUser }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $minioUser }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- else if .Values.minio.enabled }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "audiolime.minioSecretName" . }}
      key: rootUser
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "audiolime.minioSecretName" . }}
      key: rootPassword
{{- end }}
{{- else }}
- name: AUDIOLIME_STORE
  value: file:///var/lib/audiolime/store
{{- with .Values.security.inputBuckets }}
- name: AUDIOLIME_INPUT_BUCKETS
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Model volume definition. */}}
{{- define "audiolime.modelVolume" -}}
- name: models
{{- if .Values.models.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (include "audiolime.componentName" (dict "ctx" . "component" "models")) .Values.models.persistence.existingClaim }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.models.emptyDir.sizeLimit }}
{{- end }}
{{- end -}}

{{/* The shared file-store claim (s3.enabled=false; validate.yaml requires it). */}}
{{- define "audiolime.storeVolume" -}}
- name: store
  persistentVolumeClaim:
    claimName: {{ default (include "audiolime.componentName" (dict "ctx" . "component" "store")) .Values.fileStore.persistence.existingClaim }}
{{- end -}}

{{- define "audiolime.modelsImage" -}}
{{- $m := .Values.models.image -}}
{{- $registry := include "audiolime.registry" (dict "ctx" . "registry" .Values.image.registry) -}}
{{- $repo := default (printf "%s/audiolime-models" $registry) $m.repository -}}
{{- with .Values.image.digest.models -}}
{{- printf "%s@%s" $repo . -}}
{{- else -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $m.tag -}}
{{- printf "%s:%s%s" $repo $tag $m.tagSuffix -}}
{{- end -}}
{{- end -}}

{{/* Init container that fills the model volume (an initContainers list item, or nothing); call with
(dict "ctx" $ "image" "<setup image>").
models.source: image -> copy from the audiolime-models image (no network); download -> `audiolime
setup` (the pod's image unless models.setup.image); none -> no init container. */}}
{{- define "audiolime.modelInitContainer" -}}
{{- $image := .image -}}
{{- with .ctx }}
{{- if ne .Values.models.source "none" }}
{{- if eq .Values.models.source "image" }}
- name: models
  image: {{ include "audiolime.modelsImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["install", "--from", "/opt/audiolime/models", "--to", {{ .Values.models.mountPath | quote }}]
{{- else }}
- name: model-setup
  image: {{ default $image .Values.models.setup.image }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - setup
    - --model-dir
    - {{ .Values.models.mountPath }}
    - --no-demo
    {{- range .Values.models.setup.extraArgs }}
    - {{ . | quote }}
    {{- end }}
{{- end }}
  env:
    - name: HOME
      value: /tmp
  resources:
    {{- toYaml .Values.models.initResources | nindent 4 }}
  securityContext:
    {{- include "audiolime.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: models
      mountPath: {{ .Values.models.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end }}
{{- end }}
{{- end -}}

{{/* The TF Serving release of tagger.tfserving (version, else the image tag's leading x.y.z). */}}
{{- define "audiolime.tfservingVersion" -}}
{{- $t := .Values.tagger.tfserving -}}
{{- default (regexFind "^[0-9]+\\.[0-9]+\\.[0-9]+" (toString $t.image.tag)) $t.version -}}
{{- end -}}

{{/* Native gRPC probes; call with (dict "port" 50051 "service" "audiolime.v1.Separator" "probes" .Values.x.probes). */}}
{{- define "audiolime.grpcProbes" -}}
startupProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: {{ .probes.startup.periodSeconds }}
  failureThreshold: {{ .probes.startup.failureThreshold }}
readinessProbe:
  grpc:
    port: {{ .port }}
    {{- if .service }}
    service: {{ .service }}
    {{- end }}
  periodSeconds: {{ .probes.readiness.periodSeconds }}
  failureThreshold: {{ .probes.readiness.failureThreshold }}
livenessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: {{ .probes.liveness.periodSeconds }}
  failureThreshold: {{ .probes.liveness.failureThreshold }}
{{- end -}}


{{/* Egress rules (NetworkPolicyEgressRule list items). DNS: UDP and TCP 53 to the cluster DNS. */}}
{{- define "audiolime.dnsEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.egress.dns | nindent 4 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end -}}

{{/* The object store: the in-cluster MinIO pods, or the configured external S3 peers; nothing for
the file store (a volume). */}}
{{- define "audiolime.storeEgress" -}}
{{- if .Values.s3.enabled }}
{{- if and .Values.minio.enabled (not .Values.s3.endpoint) }}
- to:
    - podSelector:
        matchLabels:
          {{- include "audiolime.componentSelectorLabels" (dict "ctx" . "component" "minio") | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .Values.minio.port }}
{{- else }}
- to:
    {{- toYaml .Values.networkPolicy.egress.store.peers | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.egress.store.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The trace collector (values.tracing), when tracing is on. */}}
{{- define "audiolime.tracingEgress" -}}
{{- if .Values.tracing.otlpEndpoint }}
- to:
    {{- toYaml .Values.tracing.egress.peers | nindent 4 }}
  ports:
    {{- range .Values.tracing.egress.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* The package index, for `audiolime setup` in the init container (models.source=download). */}}
{{- define "audiolime.packageIndexEgress" -}}
{{- if eq .Values.models.source "download" }}
- to:
    {{- toYaml .Values.networkPolicy.egress.packageIndex.peers | nindent 4 }}
  ports:
    {{- range .Values.networkPolicy.egress.packageIndex.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}
{{- end -}}


{{/* -- Security (values.security; docs/security.md) ------------------------------------------ */}}

{{/* The TLS Secret of a component (tls.crt, tls.key, ca.crt); call with (dict "ctx" $ "component" "x"). */}}
{{- define "audiolime.tlsSecretName" -}}
{{- $given := index .ctx.Values.security.tls.existingSecrets .component -}}
{{- default (printf "%s-tls" (include "audiolime.componentName" .)) $given -}}
{{- end -}}

{{/* Names a component's certificate carries: its Services' short and cluster names (the tagger's
headless one too: the explainer dials it), localhost (port-forward), and for the explainer
security.tls.explainerDnsNames. Call with (dict "ctx" $ "component" "x"); a YAML list. */}}
{{- define "audiolime.tlsDnsNames" -}}
{{- $ns := .ctx.Release.Namespace -}}
{{- $svc := include "audiolime.componentName" . -}}
{{- $services := list $svc -}}
{{- if eq .component "tagger" }}{{ $services = append $services (printf "%s-headless" $svc) }}{{ end -}}
{{- $names := list -}}
{{- range $services }}
{{- $names = concat $names (list . (printf "%s.%s" . $ns) (printf "%s.%s.svc" . $ns) (printf "%s.%s.svc.cluster.local" . $ns)) -}}
{{- end -}}
{{- if eq .component "explainer" }}{{ $names = concat $names .ctx.Values.security.tls.explainerDnsNames }}{{ end -}}
{{- toYaml (append $names "localhost") -}}
{{- end -}}

{{- define "audiolime.tlsMountPath" -}}/etc/audiolime/tls{{- end -}}
{{- define "audiolime.tlsClientMountPath" -}}/etc/audiolime/tls-client{{- end -}}

{{/* Where the certificates come from: certManager, existing (security.tls.existingSecrets) or generated. */}}
{{- define "audiolime.tlsSource" -}}
{{- $t := .Values.security.tls -}}
{{- if $t.certManager.enabled }}certManager
{{- else if or $t.existingSecrets.separator $t.existingSecrets.tagger $t.existingSecrets.explainer }}existing
{{- else }}generated
{{- end -}}
{{- end -}}

{{/* The name of the explainer's client certificate: the one client the separator and our tagger
accept (--allowed-client-names). security.tls.clientName, else <fullname>-explainer-client when
the chart issues the certificates; "" (no name check) with existingSecrets and no clientName. */}}
{{- define "audiolime.explainerClientName" -}}
{{- if .Values.security.tls.clientName -}}
{{- .Values.security.tls.clientName -}}
{{- else if ne (include "audiolime.tlsSource" .) "existing" -}}
{{- include "audiolime.componentName" (dict "ctx" . "component" "explainer-client") -}}
{{- end -}}
{{- end -}}

{{/* The Secret of the explainer's client certificate (tls.crt, tls.key); "" when it presents its
server certificate (existingSecrets without explainerClient). */}}
{{- define "audiolime.explainerClientSecretName" -}}
{{- if eq (include "audiolime.tlsSource" .) "existing" -}}
{{- .Values.security.tls.existingSecrets.explainerClient -}}
{{- else -}}
{{- printf "%s-tls" (include "audiolime.componentName" (dict "ctx" . "component" "explainer-client")) -}}
{{- end -}}
{{- end -}}
{{- define "audiolime.authMountPath" -}}/etc/audiolime/auth{{- end -}}

{{/* Environment of our servers' security flags; call with (dict "ctx" $ "component" "x").
Separator and our tagger: TLS with client certificates of the CA required (mTLS), and only the
explainer's client certificate by name (when known). Explainer: TLS for its clients (who
authenticate with tokens), and its client certificate presented to the backends. */}}
{{- define "audiolime.securityEnv" -}}
{{- $sec := .ctx.Values.security -}}
- name: AUDIOLIME_HEALTH_PORT
  value: {{ $sec.healthPort | quote }}
{{- if $sec.reflection }}
- name: AUDIOLIME_REFLECTION
  value: "true"
{{- end }}
{{- if $sec.enabled }}
{{- $dir := include "audiolime.tlsMountPath" . }}
- name: AUDIOLIME_TLS_CERT
  value: {{ $dir }}/tls.crt
- name: AUDIOLIME_TLS_KEY
  value: {{ $dir }}/tls.key
{{- if eq .component "explainer" }}
- name: AUDIOLIME_TLS_CA
  value: {{ $dir }}/ca.crt
{{- $clientDir := ternary (include "audiolime.tlsClientMountPath" .) $dir (ne (include "audiolime.explainerClientSecretName" .ctx) "") }}
- name: AUDIOLIME_TLS_CLIENT_CERT
  value: {{ $clientDir }}/tls.crt
- name: AUDIOLIME_TLS_CLIENT_KEY
  value: {{ $clientDir }}/tls.key
- name: AUDIOLIME_AUTH_TOKENS_FILE
  value: {{ include "audiolime.authMountPath" . }}/{{ $sec.auth.key }}
{{- else }}
- name: AUDIOLIME_TLS_CLIENT_CA
  value: {{ $dir }}/ca.crt
{{- with include "audiolime.explainerClientName" .ctx }}
- name: AUDIOLIME_ALLOWED_CLIENT_NAMES
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* volumeMounts of the security files (nothing when security is off); (dict "ctx" $ "component" "x"). */}}
{{- define "audiolime.securityMounts" -}}
{{- if .ctx.Values.security.enabled }}
- name: tls
  mountPath: {{ include "audiolime.tlsMountPath" . }}
  readOnly: true
{{- if eq .component "explainer" }}
{{- if include "audiolime.explainerClientSecretName" .ctx }}
- name: tls-client
  mountPath: {{ include "audiolime.tlsClientMountPath" . }}
  readOnly: true
{{- end }}
- name: auth
  mountPath: {{ include "audiolime.authMountPath" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of the security files: the component's TLS Secret (and the explainer's token Secret).
Mounted whole (no subPath) so that the kubelet's in-place updates reach the servers, which re-read
certificates and tokens when they change. */}}
{{- define "audiolime.securityVolumes" -}}
{{- if .ctx.Values.security.enabled }}
- name: tls
  secret:
    secretName: {{ include "audiolime.tlsSecretName" . }}
    defaultMode: 0440
{{- if eq .component "explainer" }}
{{- with include "audiolime.explainerClientSecretName" .ctx }}
- name: tls-client
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
- name: auth
  secret:
    secretName: {{ include "audiolime.authSecretName" .ctx }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end -}}

{{- define "audiolime.authSecretName" -}}
{{- default (printf "%s-auth-tokens" (include "audiolime.componentName" (dict "ctx" . "component" "explainer"))) .Values.security.auth.existingSecret -}}
{{- end -}}

{{/* The health containerPort of our servers. */}}
{{- define "audiolime.healthPort" -}}
- name: health
  containerPort: {{ .Values.security.healthPort }}
  protocol: TCP
{{- end -}}

{{/* More than one explainer at once (fixed replicas > 1 or the HPA): "true" or "". */}}
{{- define "audiolime.severalExplainers" -}}
{{- $e := .Values.explainer -}}
{{- if or $e.autoscaling.enabled (gt (int $e.replicas) 1) }}true{{ end -}}
{{- end -}}

{{/* The registry of an image: global.imageRegistry when set, else the image's own. */}}
{{- define "audiolime.registry" -}}
{{- default .registry .ctx.Values.global.imageRegistry -}}
{{- end -}}

{{/* A third-party image (repository, tag): under global.imageRegistry (a mirror) when set, its own
registry host (a first path part with a dot, e.g. quay.io) dropped: quay.io/minio/minio ->
<mirror>/minio/minio, tensorflow/serving -> <mirror>/tensorflow/serving. */}}
{{- define "audiolime.thirdPartyImage" -}}
{{- $repo := .repository -}}
{{- with .ctx.Values.global.imageRegistry -}}
{{- $parts := splitList "/" $repo -}}
{{- if and (gt (len $parts) 1) (contains "." (first $parts)) }}{{ $repo = join "/" (rest $parts) }}{{ end -}}
{{- $repo = printf "%s/%s" . $repo -}}
{{- end -}}
{{- printf "%s:%s" $repo .tag -}}
{{- end -}}

{{/* Pod template labels: the component's, then podLabels (global, then the component's). */}}
{{- define "audiolime.podLabels" -}}
{{- include "audiolime.componentLabels" (dict "ctx" .ctx "component" .component) }}
{{- with merge (deepCopy (default dict (index .ctx.Values .component).podLabels)) (default dict .ctx.Values.podLabels) }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* podAnnotations (the component's over the global ones), as YAML lines or nothing. */}}
{{- define "audiolime.podAnnotations" -}}
{{- with merge (deepCopy (default dict (index .ctx.Values .component).podAnnotations)) (default dict .ctx.Values.podAnnotations) }}
{{- toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod spec fields every workload takes: imagePullSecrets, priorityClassName, runtimeClassName
(the component's, else the global one; the GPU separator's separator.gpu.runtimeClassName first). */}}
{{- define "audiolime.podExtras" -}}
{{- $c := index .ctx.Values .component -}}
{{- $runtime := default .ctx.Values.runtimeClassName $c.runtimeClassName -}}
{{- if and (eq .component "separator") (eq .ctx.Values.separator.accelerator "gpu") .ctx.Values.separator.gpu.runtimeClassName }}
{{- $runtime = .ctx.Values.separator.gpu.runtimeClassName }}
{{- end }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with default .ctx.Values.priorityClassName $c.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $runtime }}
runtimeClassName: {{ . }}
{{- end }}
{{- end -}}
