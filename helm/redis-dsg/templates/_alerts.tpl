{{/*
The alerting rules, shared by the PrometheusRule and (rendered with the
chart's defaults) deploy/prometheus/alerts.yaml. Series are selected by
job = the Service's name, which a ServiceMonitor sets; the readiness alert
reads kube-state-metrics.
*/}}
{{- define "redis-dsg.alertGroups" -}}
{{- $job := include "redis-dsg.fullname" . -}}
{{- $sel := printf "job=%q" $job -}}
{{- $queue := printf "job=%q, queue=%q" $job .Values.config.redis.queue -}}
{{- $errors := printf "job=%q, queue=%q" $job .Values.config.redis.errorQueue -}}
{{- $deployment := printf "deployment=%q" $job -}}
groups:
  - name: redis-dsg
    rules:
      - alert: RedisDsgNoGenerator
        expr: sum by (namespace) (dsg_is_generator{ {{- $sel -}} }) < 1 or absent(dsg_is_generator{ {{- $sel -}} })
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: No redis-dsg replica has generated messages for over a minute.
          description: {{ printf "No pod of %s holds the generator lease (or none is scraped). Check `kubectl logs -l app.kubernetes.io/instance=%s` and Redis reachability." $job .Release.Name | quote }}
      - alert: RedisDsgMultipleGenerators
        expr: sum by (namespace) (dsg_is_generator{ {{- $sel -}} }) > 1
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: More than one redis-dsg replica reports itself as generator.
          description: {{ printf "{{ $value }} pods of %s report dsg_is_generator=1 in namespace {{ $labels.namespace }}. Fencing rejects stale writes (dsg_generator_fenced_writes_rejected_total), but the lease timing (lease.ttlMs > renewDeadlineMs > retryPeriodMs) or clock pauses need a look." $job | quote }}
      - alert: RedisDsgErrorListGrowing
        expr: delta(max by (namespace) (dsg_queue_length{ {{- $errors -}} })[15m:1m]) > 0
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: The redis-dsg error list keeps growing.
          description: {{ printf "The error list %s grew by {{ $value }} entries in 15 minutes. Read it with `kubectl exec deploy/%s -- redis-dsg errors list --limit 20`, then drain or requeue it." .Values.config.redis.errorQueue $job | quote }}
      - alert: RedisDsgBacklogGrowing
        expr: deriv(max by (namespace) (dsg_queue_length{ {{- $queue -}} })[15m:1m]) > 0 and max by (namespace) (dsg_queue_length{ {{- $queue -}} }) > {{ .Values.prometheusRule.backlogThreshold | int64 }}
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: The redis-dsg queue backlog keeps growing.
          description: {{ printf "The queue %s holds over %d messages and grows by {{ $value | humanize }} messages/s: consumers do not keep up. Add consumers (kubectl scale deployment/%s --replicas=N) or look at processing time." .Values.config.redis.queue (.Values.prometheusRule.backlogThreshold | int64) $job | quote }}
      - alert: RedisDsgConsumersNotReady
        expr: kube_deployment_status_replicas_available{ {{- $deployment -}} } < kube_deployment_spec_replicas{ {{- $deployment -}} }
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: Some redis-dsg pods have not been ready for 10 minutes.
          description: {{ printf "Deployment %s in namespace {{ $labels.namespace }} has fewer available pods than desired; /readyz fails while Redis is unreachable. Check `kubectl describe deployment %s`." $job $job | quote }}
      - alert: RedisDsgFencedWritesRejected
        expr: sum by (namespace) (increase(dsg_generator_fenced_writes_rejected_total{ {{- $sel -}} }[10m])) > 0
        labels:
          severity: warning
        annotations:
          summary: A redis-dsg generator kept writing after it lost the lease.
          description: Redis refused writes from a replica that no longer held the lease (a paused or partitioned ex-generator). Nothing was written twice, but the replica was stalled for longer than lease.renewDeadlineMs.
      - alert: RedisDsgRedisErrors
        expr: sum by (namespace) (rate(dsg_redis_errors_total{ {{- $sel -}} }[5m])) > 0
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: redis-dsg keeps failing Redis operations.
          description: {{ printf "Pods of %s report {{ $value | humanize }} failed Redis operations per second (dsg_redis_errors_total by operation)." $job | quote }}
{{- end }}
