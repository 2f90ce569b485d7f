{{- define "cgo.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cgo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cgo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cgo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cgo.labels" -}}
{{ include "cgo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cgo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cgo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The rules the operator needs on ConsumerGroups and their workloads, in every watched namespace. */}}
{{- define "cgo.workloadRules" -}}
# Watch ConsumerGroups (the controller's main resource).
- apiGroups: [kafka.operators.dev]
  resources: [consumergroups]
  verbs: [get, list, watch]
# Write status only: the operator never changes the spec of a ConsumerGroup or an OffsetReset
# (no GitOps drift).
- apiGroups: [kafka.operators.dev]
  resources: [consumergroups/status, offsetresets/status]
  verbs: [get, patch]
# Watch OffsetResets: run them, and hold a ConsumerGroup's workload at zero while one runs.
- apiGroups: [kafka.operators.dev]
  resources: [offsetresets]
  verbs: [get, list, watch]
# Own the consumer Deployment of spec.template: server-side apply creates and updates it; the
# watch puts back hand edits.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# Drive replicas of spec.scaleTargetRef workloads through their scale subresource only.
- apiGroups: [apps]
  resources: [deployments/scale, statefulsets/scale]
  verbs: [get, patch]
# Read the Secret named in spec.kafka.clientPropertiesSecretRef (TLS/SASL client properties).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# List the workload's pods (metadata only) during an OffsetReset: once none is left, members that
# stay in the group are consumers outside the workload, and the reset fails instead of waiting.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Record Events on ConsumerGroups (scaled, capped, Kafka lost/regained).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
