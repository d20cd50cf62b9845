{{/*
Names. Component names are cut so that a StatefulSet's name plus the
controller-revision-hash suffix Kubernetes appends stays within 63 characters.
*/}}
{{- define "pipemesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pipemesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pipemesh.base" -}}
{{- include "pipemesh.fullname" . | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "pipemesh.psName" -}}
{{- printf "%s-ps" (include "pipemesh.base" .) }}
{{- end }}

{{/* The StatefulSet (and headless Service) of one stage: (dict "root" $ "stage" N). */}}
{{- define "pipemesh.stageName" -}}
{{- printf "%s-stage-%d" (include "pipemesh.base" .root) (int .stage) }}
{{- end }}

{{- define "pipemesh.coordinatorName" -}}
{{- printf "%s-coordinator" (include "pipemesh.base" .) }}
{{- end }}


{{- define "pipemesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pipemesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Labels, per Kubernetes' recommended labels: (dict "root" $ "component" "ps").
Selector labels are the subset that never changes across upgrades.
*/}}
{{- define "pipemesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipemesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if hasKey . "stage" }}
pipemesh/stage: {{ .stage | quote }}
{{- end }}
{{- end }}

{{- define "pipemesh.labels" -}}
helm.sh/chart: {{ include "pipemesh.chart" .root }}
{{ include "pipemesh.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: pipemesh
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Addresses the coordinator dials: the pods' stable DNS names under their
headless Services, <pod>.<service>.<namespace>.svc.<clusterDomain>:<port>.
*/}}
{{- define "pipemesh.psAddresses" -}}
{{- $name := include "pipemesh.psName" . }}
{{- $addresses := list }}
{{- range $task := until (int .Values.ps.tasks) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" $name $task $name $.Release.Namespace $.Values.clusterDomain (int $.Values.ps.port)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/* Stages in order separated by ";", the replicas of a stage by ",". */}}
{{- define "pipemesh.partitionAddresses" -}}
{{- $stages := list }}
{{- range $stage, $spec := .Values.partition.stages }}
{{- $name := include "pipemesh.stageName" (dict "root" $ "stage" $stage) }}
{{- $replicas := list }}
{{- range $replica := until (int $spec.replicas) }}
{{- $replicas = append $replicas (printf "%s-%d.%s.%s.svc.%s:%d" $name $replica $name $.Release.Namespace $.Values.clusterDomain (int $.Values.partition.port)) }}
{{- end }}
{{- $stages = append $stages (join "," $replicas) }}
{{- end }}
{{- join ";" $stages }}
{{- end }}

{{/* Arguments every service takes, after `serve <role>`: (dict "root" $ "port" N "role" "ps"). */}}
{{- define "pipemesh.serviceArgs" -}}
{{- $values := .root.Values }}
- --listen
- {{ printf "%s:%d" $values.listenHost (int .port) | quote }}
- --grace-seconds
- {{ $values.graceSeconds | quote }}
- --max-message-mib
- {{ $values.maxMessageMiB | quote }}
{{- if and $values.tls.enabled $values.tls.secretName }}
- --tls-cert
- /etc/pipemesh/tls/{{ $values.tls.certKey }}
- --tls-key
- /etc/pipemesh/tls/{{ $values.tls.keyKey }}
- --tls-ca
- /etc/pipemesh/tls/{{ $values.tls.caKey }}
{{- else if $values.tls.enabled }}
- --tls-cert
- /etc/pipemesh/tls/{{ .role }}.crt
- --tls-key
- /etc/pipemesh/tls/{{ .role }}.key
- --tls-ca
- /etc/pipemesh/tls/ca.crt
{{- end }}
{{- end }}

{{/* The Secret of the TLS files: the one given, or the one the chart makes. */}}
{{- define "pipemesh.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "pipemesh.fullname" . | trunc 59 | trimSuffix "-")) -}}
{{- end }}

{{/* The Secret of the admin user's certificate the chart makes. */}}
{{- define "pipemesh.adminSecretName" -}}
{{- printf "%s-admin" (include "pipemesh.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end }}

{{/* Container ports: (dict "root" $ "port" N). */}}
{{- define "pipemesh.containerPorts" -}}
- name: grpc
  containerPort: {{ .port }}
  protocol: TCP
{{- if .root.Values.metrics.enabled }}
- name: metrics
  containerPort: {{ .root.Values.metrics.port }}
  protocol: TCP
{{- end }}
{{- end }}

{{/*
Probes on grpc.health.v1.Health: (dict "root" $ "port" N "service" "pipemesh.v1.X").
Kubernetes' gRPC probes speak plaintext only, so with TLS on they fall back
to checking that the port accepts connections.
*/}}
{{- define "pipemesh.probeCheck" -}}
{{- if .root.Values.tls.enabled }}
tcpSocket:
  port: grpc
{{- else }}
grpc:
  port: {{ .port }}
  service: {{ .service | quote }}
{{- end }}
{{- end }}

{{- define "pipemesh.probes" -}}
{{- $probes := .root.Values.probes }}
startupProbe:
  {{- include "pipemesh.probeCheck" (dict "root" .root "port" .port "service" "") | trim | nindent 2 }}
  {{- toYaml $probes.startup | nindent 2 }}
livenessProbe:
  {{- include "pipemesh.probeCheck" (dict "root" .root "port" .port "service" "") | trim | nindent 2 }}
  {{- toYaml $probes.liveness | nindent 2 }}
readinessProbe:
  {{- include "pipemesh.probeCheck" (dict "root" .root "port" .port "service" .service) | trim | nindent 2 }}
  {{- toYaml $probes.readiness | nindent 2 }}
{{- end }}

{{/* Pod-level settings shared by every role: (dict "root" $ "placement" (dict ...)). */}}
{{- define "pipemesh.podSettings" -}}
{{- $values := .root.Values }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $values.podSecurityContext | nindent 2 }}
{{- with .placement.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "pipemesh.podAnnotations" -}}
{{- $values := .Values }}
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- if and $values.metrics.enabled $values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ $values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
The TLS volume and /tmp, mounted in every container: (dict "root" $ "role" "ps").
From the chart's own Secret a pod gets its role's certificate and key and the
CA certificate, nothing else.
*/}}
{{- define "pipemesh.commonVolumes" -}}
{{- $values := .root.Values }}
- name: tmp
  emptyDir: {}
{{- if $values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "pipemesh.tlsSecretName" .root }}
    defaultMode: 0440
    {{- if not $values.tls.secretName }}
    items:
      - key: ca.crt
        path: ca.crt
      - key: {{ .role }}.crt
        path: {{ .role }}.crt
      - key: {{ .role }}.key
        path: {{ .role }}.key
    {{- end }}
{{- end }}
{{- end }}

{{- define "pipemesh.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/pipemesh/tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
The container's environment: (dict "root" $ "env" (list ...)), the role's own
variables first. Optional settings (--metrics-listen, --max-kept-mib) go as
PIPEMESH_* variables, which every service reads as the flag's default.
*/}}
{{- define "pipemesh.env" -}}
{{- $values := .root.Values }}
{{- $env := .env | default list }}
{{- if $values.metrics.enabled }}
{{- $env = append $env (dict "name" "PIPEMESH_METRICS_LISTEN" "value" (printf "%s:%d" $values.listenHost (int $values.metrics.port))) }}
{{- end }}
{{- $env = concat $env $values.extraEnv }}
{{- with $env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
