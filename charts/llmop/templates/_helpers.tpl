{{/* Names and labels shared by every template. */}}

{{- define "llmop.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already says llmop. */}}
{{- define "llmop.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "llmop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "llmop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "llmop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What llmop does in a namespace it manages: the rules of the cluster-wide ClusterRole, or of the
Role in each of .Values.watchNamespaces. Each says whose need it is: kopf's (the framework) or
llmop's (the handlers in operator/llmop/handlers/).
*/}}
{{- define "llmop.namespacedRules" -}}
# kopf: watch both kinds; patch them to keep its finalizer and its llmop.dev/ progress annotations.
# llmop: get a backend (a ModelPull reads its backend's spec).
- apiGroups: ["llmop.dev"]
  resources: ["llmbackends", "modelpulls"]
  verbs: ["get", "list", "watch", "patch"]
# llmop: status is llmop's observation of the runtime and of the pull.
- apiGroups: ["llmop.dev"]
  resources: ["llmbackends/status", "modelpulls/status"]
  verbs: ["patch"]
# llmop: one ModelPull per model in spec.models, deleted when the model leaves the spec.
- apiGroups: ["llmop.dev"]
  resources: ["modelpulls"]
  verbs: ["create", "delete"]
# llmop: owner references with blockOwnerDeletion, where the API server enforces their
# permission (the OwnerReferencesPermissionEnforcement admission plugin, on in OpenShift).
- apiGroups: ["llmop.dev"]
  resources: ["llmbackends/finalizers"]
  verbs: ["update"]
# llmop: a backend's Deployment, Service and model claim, written by server-side apply
# (patch; create when the object does not exist yet), each read first by name (get): llmop writes
# over none that the backend does not own. Deletion is left to the garbage collector.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "create", "patch"]
# llmop: the in-memory index of the runtime pods (kopf.index on pods); patch for spec.autoscaling's
# scale-down alone: the pod-deletion-cost annotation on a drained pod, so that the ReplicaSet
# removes it and not a pod with a stream in flight.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# llmop: read the API key a backend names in spec.apiKeySecretRef, and check that every Secret,
# ConfigMap and claim (get above) a backend's pods would get carries llmop.dev/use=true. Never
# written or listed.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
# llmop: each vLLM and llama.cpp backend's agent token, a Secret llmop creates once and reads back
# by name; llmop uses one only when it carries llmop's label and an owner reference to the backend.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# llmop: the NetworkPolicy that lets only the operator's pods reach a backend's agent
# (server-side apply, read first by name like the objects above). Deletion is left to the garbage
# collector.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
# llmop: the PodDisruptionBudget of a backend with more than one replica (server-side apply, read
# first by name like the objects above), deleted when the backend drops to one replica and the
# budget is the backend's own.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# llmop: check that the ServiceAccount a backend's pods would run as (spec.serviceAccountName)
# carries llmop.dev/use=true. Never written or listed.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
# kopf and llmop: Events on the backends and pulls (kubectl describe shows them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
