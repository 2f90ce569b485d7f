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
# Watch KafkaConnections (named connection settings of a namespace) and report in their status
# whether they work and which ConsumerGroups use them.
- apiGroups: [kafka.operators.dev]
  resources: [kafkaconnections]
  verbs: [get, list, watch]
- apiGroups: [kafka.operators.dev]
  resources: [kafkaconnections/status]
  verbs: [get, patch]
{{- if .Values.kafka.allowNamespaceSecrets }}
# Read the Secrets named by ConsumerGroups (spec.kafka.clientPropertiesSecretRef) and
# KafkaConnections. RBAC cannot select by label, but the operator checks the Secret's metadata first
# and reads only Secrets labelled kafka.operators.dev/client-properties=true. Turn this off with
# kafka.allowNamespaceSecrets=false (ClusterKafkaConnections then carry every credential).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
{{- end }}
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

{{/* Cluster-scoped reads, needed however many namespaces are watched. */}}
{{- define "cgo.clusterRules" -}}
# Watch ClusterKafkaConnections (the platform team's connection settings) and report their status.
- apiGroups: [kafka.operators.dev]
  resources: [clusterkafkaconnections]
  verbs: [get, list, watch]
- apiGroups: [kafka.operators.dev]
  resources: [clusterkafkaconnections/status]
  verbs: [get, patch]
# Read a ConsumerGroup's namespace labels, to check them against the namespaceSelector of the
# ClusterKafkaConnection it names.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
{{- end -}}
