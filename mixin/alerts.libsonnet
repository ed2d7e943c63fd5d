// prometheusAlerts: the jobloop alert rules. Every series selector goes
// through _config.jobloopSelector; fleet alerts aggregate by
// _config.groupLabels. What each alert means and what to do: the runbook
// (alerts/runbook.md, one section per alert, anchor = lower-cased name).
{
  local c = self._config,
  // metric{selector[, extra matchers]}
  local s(metric, extra='') =
    '%s{%s%s}' % [metric, c.jobloopSelector, if extra == '' then '' else ', ' + extra],
  local by = std.join(', ', c.groupLabels),
  local halted = '(%s == 1 or %s == 1)' % [s('jobloop_unhealthy'), s('jobloop_token_expired')],
  local trim(text) = std.rstripChars(text, '\n'),

  // Alert text: "pod <pod>" where the pod label exists, else the instance,
  // then the group labels that exist ("namespace a, job jobloop").
  local groupText = std.join('', [
    '{{ with $labels.%s }}%s {{ . }}, {{ end }}' % [l, l]
    for l in c.groupLabels[:std.length(c.groupLabels) - 1]
  ]) + '%s {{ $labels.%s }}' % [c.groupLabels[std.length(c.groupLabels) - 1], c.groupLabels[std.length(c.groupLabels) - 1]],
  local who = 'jobloop {{ if $labels.%(p)s }}pod {{ $labels.%(p)s }}{{ else }}at {{ $labels.instance }}{{ end }} (%(g)s)' % { p: c.podLabel, g: groupText },

  local alert(name, expr, forDuration, severity, summary, description) = {
    alert: name,
    expr: trim(expr),
    'for': forDuration,
    labels: { severity: severity },
    annotations: {
      summary: summary,
      description: description,
      runbook_url: std.format(c.runbookURLPattern, std.asciiLower(name)),
    },
  },

  prometheusAlerts+:: {
    groups+: [{
      name: 'jobloop-alerts',
      rules: [
        alert(
          'JobloopDown',
          '%s == 0' % s('up'),
          '5m',
          c.instanceSeverity,
          'A jobloop instance cannot be scraped.',
          'Prometheus has failed to scrape %s for 5 minutes: the process is gone, restarting or unreachable, so its jobs are not being run.' % who,
        ),
        alert(
          'JobloopAbsent',
          'absent(%s)' % s('up'),
          '15m',
          'warning',
          'No jobloop target is known to Prometheus.',
          'Prometheus has had no target matching {%s} for 15 minutes{{ with $labels.job }} (job {{ . }}){{ end }}: the deployment was removed or the scrape configuration no longer finds it, and nothing about jobloop is being watched.' % c.jobloopSelector,
        ),
        alert(
          'JobloopTokenExpired',
          '%s == 1' % s('jobloop_token_expired'),
          '1m',
          c.instanceSeverity,
          'A jobloop instance halted because its credentials expired.',
          "%s saw expired credentials in its job's output or exit code and has stopped starting jobs. Renew the credentials, then resume it with POST /resume or SIGHUP." % who,
        ),
        alert(
          'JobloopUnhealthy',
          '%s == 1' % s('jobloop_unhealthy'),
          '1m',
          c.instanceSeverity,
          'A jobloop instance halted after too many failures.',
          '%s is halted as unhealthy (AGENT_MAX_FAILURES consecutive failures, or a failed preflight) and starts no new job until it is resumed.' % who,
        ),
        // In a row: an instance that alternates failures and successes is
        // JobloopFailureRatioHigh's business; halted ones the halt alerts'.
        alert(
          'JobloopFailing',
          |||
            %s >= %d
              unless %s
          ||| % [s('jobloop_consecutive_failures'), c.consecutiveFailuresThreshold, halted],
          '10m',
          'warning',
          'A jobloop instance keeps failing.',
          'The last {{ $value }} runs of %s failed and none has succeeded since; it keeps retrying with backoff.' % who,
        ),
        // The share of failed runs (failure, timeout, token_expired; skipped
        // runs are not counted) over a window: catches a worker that fails
        // 2 of every 3 runs, which never makes 3 failures in a row.
        alert(
          'JobloopFailureRatioHigh',
          |||
            (
                sum without (outcome) (increase(%(failed)s[%(w)s]))
              /
                sum without (outcome) (increase(%(runs)s[%(w)s]))
            ) >= %(ratio)s
              and sum without (outcome) (increase(%(runs)s[%(w)s])) >= %(min)d
              unless %(halted)s
          ||| % {
            failed: s('jobloop_iterations_total', 'outcome!~"success|skipped"'),
            runs: s('jobloop_iterations_total', 'outcome!="skipped"'),
            w: c.failureRatioWindow,
            ratio: c.failureRatioThreshold,
            min: c.failureRatioMinRuns,
            halted: halted,
          },
          '15m',
          'warning',
          'A jobloop instance fails a large share of its runs.',
          '{{ $value | humanizePercentage }} of the runs of %s in the last %s failed, although it has not failed often enough in a row to halt.' % [who, c.failureRatioWindow],
        ),
        // A never-succeeded instance counts from its process start.
        alert(
          'JobloopNoRecentSuccess',
          |||
            time() - (%s > 0 or %s) > %d
              unless %s
          ||| % [s('jobloop_last_success_timestamp_seconds'), s('process_start_time_seconds'), c.noSuccessSeconds, halted],
          '5m',
          'warning',
          'A jobloop instance has had no successful run for a long time.',
          'The last successful run of %s ended {{ $value | humanizeDuration }} ago (or it has never had one since it started).' % who,
        ),
        // jobloop counts failed writes of run logs and of its state directory
        // (state.json, markers): both lose data without stopping the loop.
        alert(
          'JobloopWriteErrors',
          |||
            label_replace(increase(%s[%s]) > 0, "file", "run log", "", "")
              or
            label_replace(increase(%s[%s]) > 0, "file", "state", "", "")
          ||| % [s('jobloop_run_log_write_errors_total'), c.writeErrorWindow, s('jobloop_state_write_errors_total'), c.writeErrorWindow],
          '1m',
          'warning',
          'A jobloop instance fails to write its files.',
          '%s failed {{ $value | humanize }} {{ $labels.file }} writes in the last %s: its disk is full, read-only or gone, and what it should have written is lost.' % [who, c.writeErrorWindow],
        ),
        // Beyond the backoff being slept plus a margin (> AGENT_IDLE_SLEEP),
        // with no job running and no halt. An instance that never finished
        // an iteration reports 0, so a stuck preflight counts.
        alert(
          'JobloopStalled',
          |||
            (time() - %s) > (%s + %d)
              and %s == 0
              and %s == 0
              and %s == 0
          ||| % [
            s('jobloop_last_iteration_timestamp_seconds'),
            s('jobloop_backoff_seconds'),
            c.stalledMarginSeconds,
            s('jobloop_iteration_in_progress'),
            s('jobloop_unhealthy'),
            s('jobloop_token_expired'),
          ],
          '5m',
          'warning',
          'A jobloop instance has stopped starting jobs.',
          '%s has not finished an iteration for {{ $value | humanizeDuration }}, is not running a job and is not halted: its loop is stuck.' % who,
        ),
        alert(
          'JobloopIterationTooLong',
          |||
            (time() - %s) > %d
              and %s == 1
          ||| % [s('jobloop_iteration_start_timestamp_seconds'), c.iterationTooLongSeconds, s('jobloop_iteration_in_progress')],
          '5m',
          'warning',
          'A jobloop job has been running for too long.',
          'The job run by %s started {{ $value | humanizeDuration }} ago and has not finished. Without AGENT_JOB_TIMEOUT nothing stops it.' % who,
        ),
        // Hooks run after every iteration, so failures are counted against
        // runs over a long window, not per minute: a hook that failed after
        // half the runs or more fires whatever the job length (up to half
        // the window).
        alert(
          'JobloopHookFailing',
          |||
            increase(%(hooks)s[%(w)s]) >= %(min)d
              and
            increase(%(hooks)s[%(w)s])
              >= ignoring (hook) group_left
            %(share)s * sum without (outcome) (increase(%(runs)s[%(w)s]))
          ||| % {
            share: c.hookFailureShare,
            hooks: s('jobloop_hook_failures_total'),
            runs: s('jobloop_iterations_total'),
            w: c.hookFailureWindow,
            min: c.hookFailureMinFailures,
          },
          '15m',
          'warning',
          'A jobloop rotate or cleanup hook keeps failing.',
          'The {{ $labels.hook }} hook of %s failed {{ $value | humanize }} times in the last %s, after half of the runs or more. Hook failures never stop the loop, but logs may no longer be rotated or cleaned up.' % [who, c.hookFailureWindow],
        ),
        // Halted or down, over every target of the group: a crash-looping
        // pod has no jobloop_* series but still a target (up == 0).
        alert(
          'JobloopFleetHalted',
          |||
            (
                sum by (%(by)s) ((%(unhealthy)s + %(expired)s) or (%(up)s == bool 0))
              /
                count by (%(by)s) (%(up)s)
            ) >= %(ratio)s
              and count by (%(by)s) (%(up)s) >= %(min)d
          ||| % {
            by: by,
            unhealthy: s('jobloop_unhealthy'),
            expired: s('jobloop_token_expired'),
            up: s('up'),
            ratio: c.fleetHaltedRatio,
            min: c.fleetMinSize,
          },
          '5m',
          c.fleetSeverity,
          'Half or more of a jobloop fleet is halted or down.',
          '{{ $value | humanizePercentage }} of the jobloop targets of %s are halted (unhealthy or token expired) or cannot be scraped: the fleet has lost that share of its capacity. Usually one cause, such as shared credentials that expired.' % groupText,
        ),
      ],
    }],
  },
}
