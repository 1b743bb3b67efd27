{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "grpc-router.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: the release name, plus the chart name
unless the release name already contains it. The headless Service appends
"-headless", so this stays within 54 characters.
*/}}
{{- define "grpc-router.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "grpc-router.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "grpc-router.labels" -}}
helm.sh/chart: {{ include "grpc-router.chart" . }}
{{ include "grpc-router.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: router
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels that select the release's pods (Deployment, Services, PDB). Never add
to these: a Deployment's selector cannot change.
*/}}
{{- define "grpc-router.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grpc-router.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the pods run as.
*/}}
{{- define "grpc-router.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "grpc-router.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository and tag (the appVersion when no tag is given).
*/}}
{{- define "grpc-router.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The port instances register on: ports.registrations, or the clients port when
it is null (one listener).
*/}}
{{- define "grpc-router.registrationsPort" -}}
{{- if kindIs "invalid" .Values.ports.registrations }}
{{- .Values.ports.clients | int }}
{{- else }}
{{- .Values.ports.registrations | int }}
{{- end }}
{{- end }}

{{/*
"true" when the clients listener has TLS (config.clients.tls is a non-empty
map), "" otherwise. With configOverride set, looks for a [clients.tls] table
in it.
*/}}
{{- define "grpc-router.clientsTls" -}}
{{- if .Values.configOverride }}
{{- if regexMatch "(?m)^\\s*\\[\\s*clients\\s*\\.\\s*tls\\s*\\]" .Values.configOverride }}true{{ end }}
{{- else }}
{{- $clients := (.Values.config | default dict).clients | default dict }}
{{- if and (kindIs "map" $clients.tls) $clients.tls }}true{{ end }}
{{- end }}
{{- end }}

{{/*
Probe mode actually used: "grpc" or "tcp" (see probes.mode).
*/}}
{{- define "grpc-router.probeMode" -}}
{{- $mode := .Values.probes.mode | default "auto" }}
{{- if eq $mode "auto" }}
{{- if include "grpc-router.clientsTls" . }}tcp{{ else }}grpc{{ end }}
{{- else if has $mode (list "grpc" "tcp") }}
{{- $mode }}
{{- else }}
{{- fail (printf "probes.mode is %q; expected auto, grpc or tcp" $mode) }}
{{- end }}
{{- end }}

{{/*
Whether the admin listener (metrics, /healthz) is on: "true" or "".
*/}}
{{- define "grpc-router.admin" -}}
{{- if not (kindIs "invalid" .Values.ports.admin) }}true{{- end }}
{{- end }}

{{/*
The pod template's annotations: the config checksum, the prometheus.io ones
and podAnnotations (which win key by key), as a dict.
*/}}
{{- define "grpc-router.podAnnotations" -}}
{{- $annotations := deepCopy (.Values.podAnnotations | default dict) }}
{{- if .Values.rollOnConfigChange }}
{{- $_ := set $annotations "checksum/config" (include "grpc-router.routerToml" . | sha256sum) }}
{{- end }}
{{- if and .Values.metrics.podAnnotations (include "grpc-router.admin" .) }}
{{- $annotations = merge $annotations (dict "prometheus.io/scrape" "true" "prometheus.io/port" (.Values.ports.admin | int | toString) "prometheus.io/path" "/metrics") }}
{{- end }}
{{- toYaml $annotations }}
{{- end }}

{{/*
A listen address "host:port", with an IPv6 host in brackets.
Takes (list host port).
*/}}
{{- define "grpc-router.listenAddress" -}}
{{- $host := index . 0 }}
{{- $port := index . 1 | int }}
{{- if and (contains ":" $host) (not (hasPrefix "[" $host)) }}
{{- printf "[%s]:%d" $host $port }}
{{- else }}
{{- printf "%s:%d" $host $port }}
{{- end }}
{{- end }}

{{/*
Sets <section>.address in the config map from a port, or checks that an
address given there uses that port. Takes (dict "config" map "section" name
"host" host "port" port-or-nil "portValue" name-of-the-port-value).
*/}}
{{- define "grpc-router.setAddress" -}}
{{- $section := get .config .section | default dict }}
{{- if kindIs "invalid" .port }}
{{- if hasKey $section "address" }}
{{- fail (printf "config.%s.address is set but %s is null: set the port in %s (the chart writes the address)" .section .portValue .portValue) }}
{{- end }}
{{- else }}
{{- $port := .port | int }}
{{- if and (hasKey $section "address") (not (kindIs "invalid" (get $section "address"))) }}
{{- $address := get $section "address" | toString }}
{{- if not (hasSuffix (printf ":%d" $port) $address) }}
{{- fail (printf "config.%s.address is %q but %s is %d: the container port, probes and Services follow %s, so leave config.%s.address out" .section $address .portValue $port .portValue .section) }}
{{- end }}
{{- else }}
{{- $_ := set $section "address" (include "grpc-router.listenAddress" (list .host $port)) }}
{{- end }}
{{- $_ := set .config .section $section }}
{{- end }}
{{- end }}

{{/*
router.toml: configOverride verbatim, or `config` with the listen addresses
from `ports`, rendered as TOML.
*/}}
{{- define "grpc-router.routerToml" -}}
{{- if .Values.configOverride }}
{{- .Values.configOverride }}
{{- else }}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- include "grpc-router.setAddress" (dict "config" $config "section" "clients" "host" .Values.listenHost "port" .Values.ports.clients "portValue" "ports.clients") }}
{{- include "grpc-router.setAddress" (dict "config" $config "section" "registrations" "host" .Values.listenHost "port" .Values.ports.registrations "portValue" "ports.registrations") }}
{{- include "grpc-router.setAddress" (dict "config" $config "section" "admin" "host" .Values.listenHost "port" .Values.ports.admin "portValue" "ports.admin") }}
{{- if not (kindIs "invalid" .Values.keda.port) }}
{{- $_ := set $config "keda" (dict "listen" (include "grpc-router.listenAddress" (list .Values.listenHost .Values.keda.port))) }}
{{- end }}
{{- if and .Values.metrics.perInstance (not (kindIs "invalid" .Values.ports.admin)) }}
{{- $admin := get $config "admin" }}
{{- $_ := set $admin "per_instance_metrics" true }}
{{- end }}
{{- $toml := include "grpc-router.tomlTable" (dict "path" (list) "table" $config) }}
{{- regexReplaceAll "\n{3,}" $toml "\n\n" | trim }}
{{- printf "\n" }}
{{- end }}
{{- end }}

{{/*
A TOML key: bare when it may be, else a quoted string.
*/}}
{{- define "grpc-router.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
A TOML value from a scalar or list of values. Helm reads numbers from values
files as floats: whole ones are written as integers. JSON string escapes are
valid in TOML basic strings.
*/}}
{{- define "grpc-router.tomlValue" -}}
{{- $v := . }}
{{- if kindIs "string" $v }}{{ toJson $v }}
{{- else if kindIs "bool" $v }}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if eq (floor $v) (float64 $v) }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}{{ $v }}
{{- else if kindIs "slice" $v }}[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "grpc-router.tomlValue" $e }}{{ end }}]
{{- else }}
{{- fail (printf "config: a %s value (%v) cannot be written to router.toml; arrays of tables are not supported, use configOverride" (kindOf $v) $v) }}
{{- end }}
{{- end }}

{{/*
A TOML table and its subtables, keys sorted. Takes (dict "path" list-of-keys
"table" map). Null values and empty maps are left out; a table with only
subtables gets no header of its own.
*/}}
{{- define "grpc-router.tomlTable" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- $scalars := list }}
{{- $subtables := list }}
{{- range $key := keys $table | sortAlpha }}
{{- $v := get $table $key }}
{{- if kindIs "map" $v }}
{{- if $v }}{{ $subtables = append $subtables $key }}{{ end }}
{{- else if not (kindIs "invalid" $v) }}
{{- $scalars = append $scalars $key }}
{{- end }}
{{- end }}
{{- if and $path $scalars }}
{{- $header := list }}
{{- range $path }}{{ $header = append $header (include "grpc-router.tomlKey" .) }}{{ end }}
{{ printf "\n[%s]" (join "." $header) }}
{{- end }}
{{- range $scalars }}
{{ include "grpc-router.tomlKey" . }} = {{ include "grpc-router.tomlValue" (get $table .) }}
{{- end }}
{{- range $subtables }}
{{ include "grpc-router.tomlTable" (dict "path" (append $path .) "table" (get $table .)) }}
{{- end }}
{{- end }}

{{/*
A duration of config.shutdown in whole seconds, rounded up ("30s", "1m30s",
"500ms", "2m" ...), or "" when it is not in that form. Takes (dict "root" .
"key" "grace" "default" "30s").
*/}}
{{- define "grpc-router.shutdownSeconds" -}}
{{- $value := .default }}
{{- if .root.Values.configOverride }}
{{- $m := regexFind (printf "(?m)^\\s*%s\\s*=\\s*\"[^\"]*\"" .key) .root.Values.configOverride }}
{{- if $m }}{{ $value = regexReplaceAll "^[^\"]*\"([^\"]*)\"$" $m "${1}" }}{{ end }}
{{- else }}
{{- $shutdown := (.root.Values.config | default dict).shutdown | default dict }}
{{- $v := get $shutdown .key }}
{{- if $v }}{{ $value = $v | toString }}{{ end }}
{{- end }}
{{- $value = $value | replace " " "" }}
{{- if regexMatch "^([0-9]+(ms|s|m|h))+$" $value }}
{{- $ms := 0 }}
{{- range regexFindAll "[0-9]+(ms|s|m|h)" $value -1 }}
{{- $n := regexFind "^[0-9]+" . | int64 }}
{{- $unit := regexFind "[a-z]+$" . }}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit }}
{{- $ms = add $ms (mul $n $scale) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}
{{- end }}

{{/*
config.shutdown.grace in whole seconds (default 30s), or "".
*/}}
{{- define "grpc-router.graceSeconds" -}}
{{- include "grpc-router.shutdownSeconds" (dict "root" . "key" "grace" "default" "30s") }}
{{- end }}

{{/*
config.shutdown.delay in whole seconds (default 0s), or "".
*/}}
{{- define "grpc-router.delaySeconds" -}}
{{- include "grpc-router.shutdownSeconds" (dict "root" . "key" "delay" "default" "0s") }}
{{- end }}

{{/*
Fails when terminationGracePeriodSeconds does not cover the shutdown: the
daemon exits within config.shutdown.delay + config.shutdown.grace + 1 s of
SIGTERM, which comes after the preStop sleep.
*/}}
{{- define "grpc-router.checkGrace" -}}
{{- $grace := include "grpc-router.graceSeconds" . }}
{{- $delay := include "grpc-router.delaySeconds" . }}
{{- if and $grace $delay }}
{{- $needed := add ($grace | int) ($delay | int) (.Values.preStopSleepSeconds | default 0 | int) 1 }}
{{- if lt (.Values.terminationGracePeriodSeconds | int) $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least preStopSleepSeconds + config.shutdown.delay + config.shutdown.grace + 1 (%d s), or the kubelet kills calls still draining" (.Values.terminationGracePeriodSeconds | int) $needed) }}
{{- end }}
{{- end }}
{{- end }}
