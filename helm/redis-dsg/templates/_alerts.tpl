{{/*
The alerting rules, shared by the PrometheusRule and (rendered with the
chart's defaults for release redis-dsg) deploy/prometheus/alerts.yaml.

What every rule keeps to:
- Series are selected by job = the Service's name, which a ServiceMonitor
  sets; kube-state-metrics series by deployment = the same name.
- No rule names a namespace: each one alerts per namespace (by
  (namespace)), so the plain rule file holds wherever the manifests are
  applied (kustomize `namespace:`), and a fleet in one namespace never
  alerts for another.
- Every alert carries exactly one label besides alertname and severity:
  namespace. It never changes while the alert fires (not even when the last
  pod vanishes), so routing by namespace and the `for` clock survive it.
- Quiet on a healthy fleet: nothing alerts on the steady state the
  configuration asks for (the processor's invalid ratio fills the error list
  by design).
- Fleet-wide gauges (queue length, oldest message age, live consumers) are
  exported by one replica at a time; the rules read them with max by
  (namespace), never summed over pods.
- Series a pod exports only from some version on (the memory, eviction and
  trimming series) are read with count/max/sum by (namespace): pods that
  lack them count nothing, so a rolling upgrade alerts on none of them.
- Each alert has a runbook_url: prometheusRule.runbookBaseUrl plus the
  README anchor of the alert's runbook (#redisdsgnogenerator, ...).
*/}}
{{- define "redis-dsg.alertGroups" -}}
{{- $job := include "redis-dsg.fullname" . -}}
{{- $v := .Values.prometheusRule -}}
{{- $sel := printf "job=%q" $job -}}
{{- $queue := printf "job=%q, queue=%q" $job .Values.config.redis.queue -}}
{{- $deployment := printf "deployment=%q" $job -}}
{{- $runbook := trimSuffix "#" $v.runbookBaseUrl -}}
{{- /* The generator's hold-back share of maxmemory; 0 (no bound) alerts at 0.9. */ -}}
{{- $memoryRatio := .Values.config.generator.maxRedisMemoryRatio | float64 -}}
{{- if le $memoryRatio 0.0 }}{{ $memoryRatio = 0.9 }}{{ end -}}
groups:
  - name: redis-dsg
    rules:
      {{- if ne .Values.config.mode "consumer" }}
      - alert: RedisDsgNoGenerator
        # No scraped pod generates; or the Deployment wants pods and none is
        # scraped (kube-state-metrics); or, without kube-state-metrics, a
        # namespace whose pods were scraped within the last hour has none
        # scraped now. Every branch yields {namespace}. The last branch is
        # not absent(): absent() knows only the labels its selector fixes,
        # so it needs the namespace written in, and then alerts forever for
        # that namespace wherever the fleet really runs. The hour bounds
        # how long a fleet that vanished without kube-state-metrics keeps
        # the alert firing (then it resolves; kube-state-metrics' branch
        # has no bound). Not rendered with config.mode=consumer, where no
        # pod of this release may generate.
        expr: |
          (sum by (namespace) (dsg_is_generator{ {{- $sel -}} }) < 1)
          or on (namespace)
          (
            sum by (namespace) (kube_deployment_spec_replicas{ {{- $deployment -}} }) > 0
            unless on (namespace) group by (namespace) (dsg_is_generator{ {{- $sel -}} })
          )
          or on (namespace)
          (
            group by (namespace) (max_over_time(dsg_is_generator{ {{- $sel -}} }[1h]))
            unless on (namespace) group by (namespace) (dsg_is_generator{ {{- $sel -}} })
            unless on (namespace) (sum by (namespace) (kube_deployment_spec_replicas{ {{- $deployment -}} }) == 0)
          )
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: No redis-dsg replica has generated messages for over a minute.
          description: {{ printf "No pod of %s in namespace {{ $labels.namespace }} holds the generator lease, or none is scraped. Check `kubectl -n {{ $labels.namespace }} get pods -l app.kubernetes.io/instance=%s`, the pods' logs and RedisDsgRedisUnreachable." $job .Release.Name | quote }}
          runbook_url: {{ printf "%s#redisdsgnogenerator" $runbook }}
      {{- end }}
      - alert: RedisDsgMultipleGenerators
        expr: |
          sum by (namespace) (dsg_is_generator{ {{- $sel -}} }) > 1
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: More than one redis-dsg replica reports itself as generator.
          description: {{ printf "{{ $value }} pods of %s report dsg_is_generator=1 in namespace {{ $labels.namespace }}. Fencing rejects stale writes (dsg_generator_fenced_writes_rejected_total), but the lease timing (lease.ttlMs > renewDeadlineMs > retryPeriodMs) or clock pauses need a look." $job | quote }}
          runbook_url: {{ printf "%s#redisdsgmultiplegenerators" $runbook }}
      - alert: RedisDsgRedisUnreachable
        # No pod reaches Redis (dsg_redis_up is 0 on every scraped pod). One
        # pod alone that cannot reach it turns unready instead
        # (RedisDsgConsumersNotReady).
        expr: |
          max by (namespace) (dsg_redis_up{ {{- $sel -}} }) == 0
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: No redis-dsg replica can reach Redis.
          description: {{ printf "Every pod of %s in namespace {{ $labels.namespace }} reports dsg_redis_up=0 for over a minute: nothing is generated or consumed. Check Redis itself, the address in config.redis.url, credentials and network policies." $job | quote }}
          runbook_url: {{ printf "%s#redisdsgredisunreachable" $runbook }}
      - alert: RedisDsgBacklogOld
        # The oldest message waiting in the queue, read in Redis by one
        # replica at a time; max_over_time bridges the hand-over between
        # reporting replicas.
        expr: |
          max by (namespace) (max_over_time(dsg_queue_oldest_message_age_seconds{ {{- $queue -}} }[2m])) > {{ $v.backlogMaxAgeSeconds | int64 }}
        for: 2m
        labels:
          severity: warning
        annotations:
          summary: Messages wait too long in the redis-dsg queue.
          description: {{ printf "The oldest message in queue %s has waited {{ $value | humanizeDuration }} (threshold %ds): consumers do not keep up or do not consume. Check dsg_consumers_live and the processing rate; add consumers with kubectl scale deployment/%s --replicas=N." .Values.config.redis.queue ($v.backlogMaxAgeSeconds | int64) $job | quote }}
          runbook_url: {{ printf "%s#redisdsgbacklogold" $runbook }}
      - alert: RedisDsgErrorShareHigh
        # The share of processed messages that went to the error list, above
        # what the processors are configured to declare invalid
        # (dsg_processor_invalid_ratio) by more than the margin, over enough
        # messages for the share to mean something.
        expr: |
          (
            sum by (namespace) (rate(dsg_messages_processed_total{ {{- $sel -}}, outcome!="ok"}[10m]))
            / sum by (namespace) (rate(dsg_messages_processed_total{ {{- $sel -}} }[10m]))
          )
          > on (namespace) (max by (namespace) (dsg_processor_invalid_ratio{ {{- $sel -}} }) + {{ $v.errorShareMargin }})
          and on (namespace) (sum by (namespace) (increase(dsg_messages_processed_total{ {{- $sel -}} }[10m])) >= {{ $v.errorShareMinMessages | int64 }})
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: More redis-dsg messages fail than the processor is configured to reject.
          description: {{ printf "{{ $value | humanizePercentage }} of the messages processed by %s in namespace {{ $labels.namespace }} went to the error list %s over 10 minutes, more than the configured invalid ratio plus %v. Read the reasons with `kubectl exec deploy/%s -- redis-dsg errors list --limit 20`." $job .Values.config.redis.errorQueue $v.errorShareMargin $job | quote }}
          runbook_url: {{ printf "%s#redisdsgerrorsharehigh" $runbook }}
      - alert: RedisDsgConsumersNotReady
        # Pods the Deployment wants but are not available (kube-state-metrics),
        # or scraped pods that report themselves unready (dsg_ready).
        expr: |
          (
            sum by (namespace) (kube_deployment_spec_replicas{ {{- $deployment -}} })
            - sum by (namespace) (kube_deployment_status_replicas_available{ {{- $deployment -}} })
            > 0
          )
          or on (namespace)
          count by (namespace) (dsg_ready{ {{- $sel -}} } == 0)
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: Some redis-dsg pods have not been ready for 10 minutes.
          description: {{ printf "Pods of %s in namespace {{ $labels.namespace }} not ready: {{ $value }}; /readyz fails while a pod cannot reach Redis or its role loop does not run. Check `kubectl -n {{ $labels.namespace }} describe deployment %s` and the body of /readyz." $job $job | quote }}
          runbook_url: {{ printf "%s#redisdsgconsumersnotready" $runbook }}
      - alert: RedisDsgFencedWritesRejected
        expr: |
          sum by (namespace) (increase(dsg_generator_fenced_writes_rejected_total{ {{- $sel -}} }[10m])) > 0
        labels:
          severity: warning
        annotations:
          summary: A redis-dsg generator kept writing after it lost the lease.
          description: Redis refused writes from a replica that no longer held the lease (a paused or partitioned ex-generator). Nothing was written twice, but the replica was stalled for longer than lease.renewDeadlineMs.
          runbook_url: {{ printf "%s#redisdsgfencedwritesrejected" $runbook }}
      - alert: RedisDsgRedisErrors
        # Failing Redis operations while Redis is reachable (permissions,
        # wrong key types, scripts); errors of an outage, and for 10 minutes
        # after it, are RedisDsgRedisUnreachable's.
        expr: |
          sum by (namespace) (rate(dsg_redis_errors_total{ {{- $sel -}} }[5m])) > 0
          unless on (namespace) (min by (namespace) (min_over_time(dsg_redis_up{ {{- $sel -}} }[10m])) == 0)
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: redis-dsg keeps failing Redis operations while Redis is reachable.
          description: {{ printf "Pods of %s in namespace {{ $labels.namespace }} report {{ printf \"%%.2f\" $value }} failed Redis operations per second although Redis answers (dsg_redis_errors_total by operation): permissions, key types or scripts. Read the pods' WARN logs." $job | quote }}
          runbook_url: {{ printf "%s#redisdsgrediserrors" $runbook }}
      - alert: RedisDsgQueueUnobserved
        # Redis answers, yet no pod reports the oldest message's age: the
        # backlog alert would be blind.
        expr: |
          group by (namespace) (dsg_redis_up{ {{- $sel -}} } == 1)
          unless on (namespace) group by (namespace) (dsg_queue_oldest_message_age_seconds{ {{- $queue -}} })
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: No redis-dsg replica reports the queue's backlog.
          description: {{ printf "Pods of %s in namespace {{ $labels.namespace }} reach Redis, but none has exported dsg_queue_oldest_message_age_seconds for queue %s for 10 minutes, so RedisDsgBacklogOld cannot fire. Check the pods' logs for the queue sampler." $job .Values.config.redis.queue | quote }}
          runbook_url: {{ printf "%s#redisdsgqueueunobserved" $runbook }}
      - alert: RedisDsgErrorEntriesTrimmed
        # The errors.max_entries bound removed the oldest entries of the
        # error list: their messages are gone, on purpose. Pods without the
        # counter (older versions) count nothing.
        expr: |
          sum by (namespace) (increase(dsg_error_entries_trimmed_total{ {{- $sel -}} }[15m])) > 0
        labels:
          severity: warning
        annotations:
          summary: redis-dsg trimmed entries off the error list (errors.max_entries).
          description: {{ printf "About {{ printf \"%%.0f\" $value }} entries were trimmed off the error list %s by pods of %s in namespace {{ $labels.namespace }} in the last 15 minutes: the errors.max_entries bound dropped the oldest, and their messages are gone. Drain or requeue the error list more often (`kubectl exec deploy/%s -- redis-dsg errors drain`), or raise the bound." .Values.config.redis.errorQueue $job $job | quote }}
          runbook_url: {{ printf "%s#redisdsgerrorentriestrimmed" $runbook }}
      - alert: RedisDsgRedisMemoryHigh
        # Redis' used_memory at or above the share of maxmemory at which the
        # generator holds back (config.generator.maxRedisMemoryRatio), as
        # every pod reads it from INFO memory; only where maxmemory is set
        # (dsg_redis_memory_max_bytes > 0). The highest pod's view counts.
        expr: |
          max by (namespace) (
            dsg_redis_memory_used_bytes{ {{- $sel -}} }
            / (dsg_redis_memory_max_bytes{ {{- $sel -}} } > 0)
          ) >= {{ $memoryRatio }}
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: Redis is close to its maxmemory; the redis-dsg generator holds back.
          description: {{ printf "Redis' used_memory is {{ $value | humanizePercentage }} of its maxmemory for pods of %s in namespace {{ $labels.namespace }} (threshold %v, generator.max_redis_memory_ratio): the queue or the error list fills Redis. Add consumers, raise maxmemory, or bound and drain the error list (errors.max_entries, `redis-dsg errors drain`)." $job $memoryRatio | quote }}
          runbook_url: {{ printf "%s#redisdsgredismemoryhigh" $runbook }}
      - alert: RedisDsgRedisEvicts
        # A pod read maxmemory-policy from INFO memory and it is not
        # noeviction: at maxmemory Redis may evict the queue, the error
        # list, in-flight hashes, the lease and heartbeats. Pods without the
        # gauge (older versions, or before their first read) say nothing.
        expr: |
          count by (namespace) (dsg_redis_eviction_safe{ {{- $sel -}} } == 0)
        for: 1m
        labels:
          severity: critical
        annotations:
          summary: Redis may evict redis-dsg's keys (maxmemory-policy is not noeviction).
          description: {{ printf "{{ $value }} pods of %s in namespace {{ $labels.namespace }} report dsg_redis_eviction_safe=0: Redis' maxmemory-policy is not noeviction, so at maxmemory it may evict queued and in-flight messages, the error list, the lease and heartbeats. Set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, or the managed service's parameter group)." $job | quote }}
          runbook_url: {{ printf "%s#redisdsgredisevicts" $runbook }}
{{- end }}
