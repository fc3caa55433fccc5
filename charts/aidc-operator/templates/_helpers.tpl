{{/* Names, labels and the operator's RBAC rules, written once for both scopes. */}}

{{- define "aidc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aidc.fullname" -}}
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

{{- define "aidc.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "aidc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aidc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ClusterRole that lets model servers with spec.auth.kubernetes review their callers' tokens. */}}
{{- define "aidc.inferenceReviewerRole" -}}
{{- printf "%s-inference-reviewer" (include "aidc.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aidc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aidc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aidc.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aidc
{{- end }}

{{- define "aidc.labels" -}}
{{ include "aidc.commonLabels" . }}
{{ include "aidc.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "aidc.userRoleLabels" -}}
{{ include "aidc.commonLabels" . }}
{{ include "aidc.selectorLabels" . }}
app.kubernetes.io/component: user-roles
{{- end }}

{{/*
What the operator does in the namespaces it watches. Every verb is one the operator or kopf uses;
no wildcards, no secrets.
*/}}
{{- define "aidc.rules.namespaced" -}}
# the custom resources: watched by kopf; delete for ttlSecondsAfterFinished; no spec writes
- apiGroups: [aidc.io]
  resources: [trainingjobs, inferenceservices]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [aidc.io]
  resources: [trainingjobs/status, inferenceservices/status]
  verbs: [get, patch, update]
# owner references with blockOwnerDeletion, where OwnerReferencesPermissionEnforcement is enabled
- apiGroups: [aidc.io]
  resources: [trainingjobs/finalizers, inferenceservices/finalizers]
  verbs: [update]
# the gang's ranks; patch too, because the operator grants the trainer's Role patch on pods
# and RBAC forbids granting what one does not hold
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete, patch]
# Kueue's Workload of a queued gang, read for the reason it waits (no Kueue, no harm: never granted
# anything else of Kueue's)
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get]
# rendezvous and serving Services, checkpoint claims
- apiGroups: [""]
  resources: [services, persistentvolumeclaims]
  verbs: [get, list, watch, create]
# the trainer's identity in each namespace (aidc-trainer), and the model server's (aidc-inference);
# the trainer's Role is applied (patch), so an upgrade narrows one an older operator created
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles]
  verbs: [get, create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, create]
# events on the custom resources (the operator's and kopf's)
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
# gang scheduling through Volcano or scheduler-plugins Coscheduling (Kueue needs nothing)
- apiGroups: [scheduling.volcano.sh, scheduling.x-k8s.io]
  resources: [podgroups]
  verbs: [get, create]
# the checkpoint snapshot of a succeeded job (storage.checkpoints.snapshotOnSuccess): read by name and
# created once; never listed, watched or deleted (a backup outlives its job)
- apiGroups: [snapshot.storage.k8s.io]
  resources: [volumesnapshots]
  verbs: [get, create]
# InferenceService: the serving Deployment and its autoscaler
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
# the NetworkPolicies of gangs and servers: watched (an index), created, kept in shape by server-side
# apply (patch), read when a create conflicts (whose is it?); never deleted: garbage collection does.
# Turned off, the operator still watches them and creates none.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  {{- if .Values.networkPolicy.enabled }}
  verbs: [get, list, watch, create, patch]
  {{- else }}
  verbs: [list, watch]
  {{- end }}
{{- end }}

{{/*
Cluster-scoped in both modes: what kopf observes (CRDs always; namespaces only when it watches a
list of them), and the ClusterRoleBinding of each namespace's aidc-inference ServiceAccount to the
reviewer role, which the operator may bind and no other role.
*/}}
{{- define "aidc.rules.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterrolebindings]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  verbs: [bind]
  resourceNames: [{{ include "aidc.inferenceReviewerRole" . }}]
{{- if .Values.watchNamespaces }}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
{{- end }}
