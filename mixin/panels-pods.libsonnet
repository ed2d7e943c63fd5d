// Dashboard panels per pod: state, halts, outcomes, durations, failures, logs and hooks.
// A function of the dashboard's shared values: v (selectors, the per-pod
// aggregation labels, the pod legend; see dashboards.libsonnet) and ds (the
// ${datasource} reference).
function(v, ds) [
  {
    type: 'text',
    id: 1,
    title: 'How to read this dashboard',
    description: 'Where to start and how to get from a failed run to its log and trace.',
    gridPos: { h: 4, w: 24, x: 0, y: 0 },
    options: { mode: 'markdown', content: "Read top to bottom: **state per instance** and the **halted** panels say what needs a human now (a halted instance starts no job until it is resumed: `POST /resume` with `Authorization: Bearer $AGENT_ADMIN_TOKEN`, or SIGHUP). The panels below say why: outcomes, durations, failures and backoff, logs and hooks, then jobloop's own process. The **fleet** row at the bottom adds up every instance of the selected job.\n\nFrom a failed run to its trace: `curl http://<instance>/state` gives `runLog` and `traceId`; the run log's first line is `# jobloop iteration=N trace_id=<32 hex> span_id=<16 hex> start=<time>`. Paste the trace id into Explore with the trace data source. Alerts and what to do about them: `alerts/runbook.md`." },
  },
  {
    type: 'row',
    id: 2,
    title: 'Now: state and halts',
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 4 },
    panels: [],
  },
  {
    type: 'state-timeline',
    id: 3,
    title: 'State per instance',
    description: "One row per instance, coloured by jobloop's state (the `status` of /state): green running, pale green idle (sleeping AGENT_IDLE_SLEEP after a success), orange backoff (sleeping after a failure), red unhealthy and purple token-expired (halted: no job starts until it is resumed), blue starting (preflight), grey stopping/stopped. Look for red, purple, long orange stretches, and rows that stop being green or pale green.",
    datasource: ds.datasource,
    gridPos: { h: 9, w: 16, x: 0, y: 5 },
    targets: [
      ds {
        expr: |||
          max by (%(per)s) (
            (jobloop_state{%(sel)s, state="starting"} == 1) * 1
            or (jobloop_state{%(sel)s, state="running"} == 1) * 2
            or (jobloop_state{%(sel)s, state="idle"} == 1) * 3
            or (jobloop_state{%(sel)s, state="backoff"} == 1) * 4
            or (jobloop_state{%(sel)s, state="unhealthy"} == 1) * 5
            or (jobloop_state{%(sel)s, state="token-expired"} == 1) * 6
            or (jobloop_state{%(sel)s, state="stopping"} == 1) * 7
            or (jobloop_state{%(sel)s, state="stopped"} == 1) * 8
          )
        ||| % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { mappings: [{ type: 'value', options: { '1': { text: 'starting', color: 'blue', index: 0 } } }, { type: 'value', options: { '2': { text: 'running', color: 'green', index: 1 } } }, { type: 'value', options: { '3': { text: 'idle', color: 'super-light-green', index: 2 } } }, { type: 'value', options: { '4': { text: 'backoff', color: 'orange', index: 3 } } }, { type: 'value', options: { '5': { text: 'unhealthy', color: 'red', index: 4 } } }, { type: 'value', options: { '6': { text: 'token-expired', color: 'purple', index: 5 } } }, { type: 'value', options: { '7': { text: 'stopping', color: 'light-blue', index: 6 } } }, { type: 'value', options: { '8': { text: 'stopped', color: 'gray', index: 7 } } }], color: { mode: 'thresholds' }, thresholds: { mode: 'absolute', steps: [{ color: 'gray', value: null }] }, custom: { fillOpacity: 80, lineWidth: 0 } }, overrides: [] },
    options: { showValue: 'never', mergeValues: true, rowHeight: 0.9, alignValue: 'left', legend: { showLegend: false, displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'single', sort: 'none' } },
  },
  {
    type: 'stat',
    id: 4,
    title: 'Halted: token expired',
    description: "One tile per instance. TOKEN EXPIRED: a run's exit code or output said the credentials expired (AGENT_AUTH_EXIT_CODE / AGENT_AUTH_PATTERN); the instance waits for renewed credentials and a resume. Alert JobloopTokenExpired.",
    datasource: ds.datasource,
    gridPos: { h: 4, w: 8, x: 16, y: 5 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_token_expired{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { mappings: [{ type: 'value', options: { '0': { text: 'ok', color: 'green', index: 0 }, '1': { text: 'TOKEN EXPIRED', color: 'red', index: 1 } } }], color: { mode: 'thresholds' }, thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }] } }, overrides: [] },
    options: { colorMode: 'background', graphMode: 'none', justifyMode: 'auto', orientation: 'auto', textMode: 'value_and_name', reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false } },
  },
  {
    type: 'stat',
    id: 5,
    title: 'Halted: unhealthy',
    description: 'One tile per instance. UNHEALTHY: AGENT_MAX_FAILURES runs failed in a row, or the preflight failed; the instance waits for a fix and a resume. Alert JobloopUnhealthy.',
    datasource: ds.datasource,
    gridPos: { h: 5, w: 8, x: 16, y: 9 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_unhealthy{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { mappings: [{ type: 'value', options: { '0': { text: 'ok', color: 'green', index: 0 }, '1': { text: 'UNHEALTHY', color: 'red', index: 1 } } }], color: { mode: 'thresholds' }, thresholds: { mode: 'absolute', steps: [{ color: 'green', value: null }, { color: 'red', value: 1 }] } }, overrides: [] },
    options: { colorMode: 'background', graphMode: 'none', justifyMode: 'auto', orientation: 'auto', textMode: 'value_and_name', reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false } },
  },
  {
    type: 'row',
    id: 6,
    title: 'Iterations: outcomes and durations',
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 14 },
    panels: [],
  },
  {
    type: 'timeseries',
    id: 7,
    title: 'Iterations per second by outcome',
    description: 'Finished runs per second per instance and outcome: success (exit 0), failure (any other exit or signal), timeout (stopped after AGENT_JOB_TIMEOUT), token_expired (credentials; halts the instance). Healthy: mostly success. A rising failure line is followed by backoff, then a halt.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 12, x: 0, y: 15 },
    targets: [
      ds {
        expr: 'sum by (%(per)s, outcome) (rate(jobloop_iterations_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s {{outcome}}' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'ops', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 8,
    title: 'Iteration duration p50 / p95 / p99',
    description: "Wall time of finished runs over the selected instances, from the histogram jobloop_iteration_duration_seconds (buckets 0.1 s to 1 h). A p99 close to AGENT_JOB_TIMEOUT means runs are about to time out; gaps mean no run finished in that interval. The dots are exemplars: the latest run in each bucket, with its trace_id; hover one and follow the link to that run's trace (needs Prometheus with --enable-feature=exemplar-storage).",
    datasource: ds.datasource,
    gridPos: { h: 8, w: 12, x: 12, y: 15 },
    targets: [
      ds {
        expr: 'histogram_quantile(0.5, sum by (le) (rate(jobloop_iteration_duration_seconds_bucket{%(sel)s}[$__rate_interval])))' % v,
        legendFormat: 'p50',
        range: true,
        refId: 'A',
        exemplar: true,
      },
      ds {
        expr: 'histogram_quantile(0.95, sum by (le) (rate(jobloop_iteration_duration_seconds_bucket{%(sel)s}[$__rate_interval])))' % v,
        legendFormat: 'p95',
        range: true,
        refId: 'B',
      },
      ds {
        expr: 'histogram_quantile(0.99, sum by (le) (rate(jobloop_iteration_duration_seconds_bucket{%(sel)s}[$__rate_interval])))' % v,
        legendFormat: 'p99',
        range: true,
        refId: 'C',
      },
    ],
    fieldConfig: { defaults: { unit: 's', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'heatmap',
    id: 9,
    title: 'Iteration duration heatmap',
    description: 'How many runs finished in each duration bucket per interval, all outcomes of the selected instances. A second band appearing (e.g. at the timeout) shows a new failure mode.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 12, x: 0, y: 23 },
    targets: [
      ds {
        expr: 'sum by (le) (increase(jobloop_iteration_duration_seconds_bucket{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '{{le}}',
        range: true,
        refId: 'A',
        format: 'heatmap',
      },
    ],
    fieldConfig: { defaults: { custom: { scaleDistribution: { type: 'linear' } } }, overrides: [] },
    options: { calculate: false, cellGap: 1, color: { mode: 'scheme', scheme: 'Oranges', steps: 64, exponent: 0.5, fill: 'dark-orange', scale: 'exponential', reverse: false }, yAxis: { axisPlacement: 'left', unit: 's', reverse: false }, rowsFrame: { layout: 'auto' }, filterValues: { le: 1e-09 }, legend: { show: true }, tooltip: { show: true, yHistogram: false }, cellValues: { unit: 'short' }, exemplars: { color: 'rgba(255,0,255,0.7)' } },
  },
  {
    type: 'timeseries',
    id: 10,
    title: 'Time since last success and last iteration',
    description: "Seconds since each instance's last successful run and last finished run of any outcome (instances that never got there are not shown). Both should stay near one run plus AGENT_IDLE_SLEEP. Success climbing while iteration stays low: runs finish but fail. Both climbing with no job running: the loop is stalled (JobloopStalled).",
    datasource: ds.datasource,
    gridPos: { h: 8, w: 12, x: 12, y: 23 },
    targets: [
      ds {
        expr: 'time() - max by (%(per)s) (jobloop_last_success_timestamp_seconds{%(sel)s} > 0)' % v,
        legendFormat: '%(pod)s success' % v,
        range: true,
        refId: 'A',
      },
      ds {
        expr: 'time() - max by (%(per)s) (jobloop_last_iteration_timestamp_seconds{%(sel)s} > 0)' % v,
        legendFormat: '%(pod)s iteration' % v,
        range: true,
        refId: 'B',
      },
    ],
    fieldConfig: { defaults: { unit: 's', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'row',
    id: 11,
    title: 'Failures, backoff and running jobs',
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 31 },
    panels: [],
  },
  {
    type: 'timeseries',
    id: 12,
    title: 'Consecutive failures',
    description: 'Failed runs in a row per instance (reset by a success). When it reaches AGENT_MAX_FAILURES the instance halts as unhealthy. Three or more for 10 minutes without a halt fires JobloopFailing.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 0, y: 32 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_consecutive_failures{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'stepAfter', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0, decimals: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 13,
    title: 'Backoff being slept',
    description: 'The backoff each instance is sleeping after a failure (0 when none): AGENT_BACKOFF_START times AGENT_BACKOFF_FACTOR per failure, capped at AGENT_BACKOFF_MAX. A staircase up to the cap means every retry fails.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 8, y: 32 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_backoff_seconds{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 's', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'stepAfter', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 14,
    title: 'Age of the running job',
    description: "How long the job running now on each instance has been running (no line while none runs). Compare with your jobs' normal duration; beyond an hour JobloopIterationTooLong fires. AGENT_JOB_TIMEOUT stops such jobs by itself.",
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 16, y: 32 },
    targets: [
      ds {
        expr: 'time() - max by (%(per)s) (jobloop_iteration_start_timestamp_seconds{%(sel)s} > 0)' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 's', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 15,
    title: 'Last exit code',
    description: "Exit code of each instance's last run: 0 success, 126 not executable, 127 command not found, 128+N killed by signal N (137 SIGKILL, often out of memory; 143 SIGTERM), AGENT_AUTH_EXIT_CODE (default 3) expired credentials.",
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 0, y: 40 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_last_exit_code{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'stepAfter', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, decimals: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 16,
    title: 'Run-log bytes per second',
    description: 'Job output read per second per instance (written to AGENT_LOG_DIR/runs/). A job that suddenly goes quiet or floods its log shows here first.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 8, y: 40 },
    targets: [
      ds {
        expr: 'sum by (%(per)s) (rate(jobloop_run_log_bytes_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'Bps', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 17,
    title: 'Run logs truncated and deleted',
    description: "Truncated: runs whose output passed AGENT_RUN_LOG_MAX_BYTES (the rest was counted, not written; the log's last line says so). Deleted: run logs removed by retention (AGENT_LOG_KEEP, AGENT_LOG_MAX_AGE, AGENT_LOG_MAX_BYTES). Write errors: run-log or state.json writes that failed (disk full, permissions) and need a look.",
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 16, y: 40 },
    targets: [
      ds {
        expr: 'sum by (%(per)s) (increase(jobloop_run_log_truncated_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s truncated' % v,
        range: true,
        refId: 'A',
      },
      ds {
        expr: 'sum by (%(per)s) (increase(jobloop_run_logs_deleted_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s deleted by retention' % v,
        range: true,
        refId: 'B',
      },
      ds {
        expr: 'sum by (%(per)s) (increase(jobloop_run_log_write_errors_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s run-log write errors' % v,
        range: true,
        refId: 'C',
      },
      ds {
        expr: 'sum by (%(per)s) (increase(jobloop_state_write_errors_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s state write errors' % v,
        range: true,
        refId: 'D',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 18,
    title: 'Hook failures',
    description: 'Failures of the rotate and cleanup hooks (AGENT_ROTATE_CMD, AGENT_CLEANUP_CMD) per interval. They never stop the loop, but a hook failing after every run fires JobloopHookFailing.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 0, y: 48 },
    targets: [
      ds {
        expr: 'sum by (%(per)s, hook) (increase(jobloop_hook_failures_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s {{hook}}' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 19,
    title: 'Preflight checks and interrupted iterations',
    description: 'Preflight (AGENT_PREFLIGHT_CMD) results at start and during AGENT_RECOVER_INTERVAL recovery; a failure halts the instance as unhealthy. Interrupted: iterations a previous jobloop left running when it died (OOM kill, node loss), noticed at start.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 8, y: 48 },
    targets: [
      ds {
        expr: 'sum by (%(per)s, result) (increase(jobloop_preflight_checks_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s preflight {{result}}' % v,
        range: true,
        refId: 'A',
      },
      ds {
        expr: 'sum by (%(per)s) (increase(jobloop_interrupted_iterations_total{%(sel)s}[$__rate_interval]))' % v,
        legendFormat: '%(pod)s interrupted' % v,
        range: true,
        refId: 'B',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
  {
    type: 'timeseries',
    id: 20,
    title: 'Iteration in progress',
    description: '1 while a job runs on the instance, 0 while jobloop sleeps or is halted. An instance stuck at 0 while not halted is stalled (JobloopStalled); stuck at 1 is one long job.',
    datasource: ds.datasource,
    gridPos: { h: 8, w: 8, x: 16, y: 48 },
    targets: [
      ds {
        expr: 'max by (%(per)s) (jobloop_iteration_in_progress{%(sel)s})' % v,
        legendFormat: '%(pod)s' % v,
        range: true,
        refId: 'A',
      },
    ],
    fieldConfig: { defaults: { unit: 'short', custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'stepAfter', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0, decimals: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },
]
