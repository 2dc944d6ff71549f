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

{{- define "audiolime.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "audiolime.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* One of our images; call with (dict "ctx" $ "name" "separator" "suffix" ""). */}}
{{- define "audiolime.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- printf "%s/audiolime-%s:%s%s" .ctx.Values.image.registry .name $tag (default "" .suffix) -}}
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

{{/* Object-store environment (separator, explainer): --store, --s3-endpoint, --s3-region, AWS chain. */}}
{{- define "audiolime.storeEnv" -}}
{{- if .Values.s3.enabled }}
- name: AUDIOLIME_STORE
  value: {{ printf "s3://%s/%s" .Values.s3.bucket .Values.s3.prefix | trimSuffix "/" | quote }}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- with (include "audiolime.s3Endpoint" .) }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- if .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
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
{{- $repo := default (printf "%s/audiolime-models" .Values.image.registry) $m.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $m.tag -}}
{{- printf "%s:%s%s" $repo $tag $m.tagSuffix -}}
{{- end -}}

{{/* Init container that fills the model volume; call with (dict "ctx" $ "image" "<setup image>").
models.source: image -> copy from the audiolime-models image (no network); download -> `audiolime
setup` (the pod's image unless models.setup.image); none -> no init container. */}}
{{- define "audiolime.modelInitContainer" -}}
{{- $image := .image -}}
{{- with .ctx }}
{{- if ne .Values.models.source "none" }}
initContainers:
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
      {{- toYaml .Values.models.initResources | nindent 6 }}
    securityContext:
      {{- include "audiolime.containerSecurityContext" . | nindent 6 }}
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
