// The knobs of the jobloop monitoring mixin. Override them with
//   (import 'mixin.libsonnet') + { _config+:: { jobloopSelector: '...' } }
// (docs/monitoring.md shows the whole file). The shipped alerts/,
// dashboards/ and deploy/kubernetes/prometheusrule.yaml are this mixin
// rendered with these defaults by scripts/render-mixin.sh.
{
  _config+:: {
    // Label matchers that find jobloop's series, and nothing else. Every
    // series selector of every alert and dashboard query includes it, `up`
    // too, so it must also tell jobloop's targets from other targets of the
    // same scrape job. The default suits a scrape job named "jobloop"
    // (docker-compose, the PodMonitor's jobLabel). Under annotation-based
    // pod discovery (job "kubernetes-pods", pod labels copied by labelmap):
    //   'job="kubernetes-pods", app_kubernetes_io_name="jobloop"'
    jobloopSelector: 'job="jobloop"',

    // The labels that make one fleet: fleet alerts aggregate by them, the
    // inhibit rule and Alertmanager's group_by use them. A label a set-up
    // does not have (namespace outside Kubernetes) is simply empty.
    groupLabels: ['namespace', 'job'],

    // The label that names one instance in alert text and dashboard legends
    // where it exists ("pod" under Kubernetes); "instance" is shown
    // otherwise.
    podLabel: 'pod',

    // Where the runbook (alerts/runbook.md) is hosted: an absolute URL with
    // %s for the alert's anchor (its lower-cased name). The default is a
    // placeholder: set it to your copy, e.g.
    //   'https://github.com/<you>/jobloop/blob/main/alerts/runbook.md#%s'.
    runbookURLPattern: 'https://runbooks.example.com/jobloop/runbook.md#%s',

    // Severities: one instance's trouble is a warning (a ticket); a fleet
    // that lost half of its capacity pages. The fleet alert inhibits the
    // per-instance halts of the same group (deploy/compose/alertmanager.yml).
    instanceSeverity: 'warning',
    fleetSeverity: 'critical',

    // Thresholds.
    consecutiveFailuresThreshold: 3,  // JobloopFailing: failed runs in a row
    failureRatioThreshold: 0.5,  // JobloopFailureRatioHigh: share of failed runs ...
    failureRatioWindow: '1h',  // ... over this window ...
    failureRatioMinRuns: 6,  // ... of at least this many runs
    noSuccessSeconds: 6 * 3600,  // JobloopNoRecentSuccess: no success for this long
    stalledMarginSeconds: 600,  // JobloopStalled: beyond the backoff; > AGENT_IDLE_SLEEP
    iterationTooLongSeconds: 3600,  // JobloopIterationTooLong
    hookFailureWindow: '1d',  // JobloopHookFailing: over this window, a hook failed ...
    hookFailureShare: 0.5,  // ... after at least this share of the runs ...
    hookFailureMinFailures: 2,  // ... and at least this often
    writeErrorWindow: '10m',  // JobloopWriteErrors: any failed write in this window
    fleetHaltedRatio: 0.5,  // JobloopFleetHalted: share of a fleet halted or down ...
    fleetMinSize: 2,  // ... in fleets of at least this many targets

    // Dashboard.
    dashboardUID: 'jobloop',
    dashboardTitle: 'jobloop',
    dashboardTimezone: 'utc',
    dashboardRefresh: '30s',
  },
}
