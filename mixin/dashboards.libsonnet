// grafanaDashboards: the jobloop dashboard. Every query goes through
// _config.jobloopSelector and the $namespace / $job / $pod variables;
// per-instance panels aggregate by namespace, pod and instance and show
// the pod in their legends; rate windows are $__rate_interval, so the
// data source's scrape interval decides them (no hard-coded interval).
{
  local c = self._config,
  local v = {
    // One instance's series, and the fleet's (every pod of the selection).
    sel: '%s, namespace=~"$namespace", job=~"$job", %s=~"$pod"' % [c.jobloopSelector, c.podLabel],
    fleet: '%s, namespace=~"$namespace", job=~"$job"' % c.jobloopSelector,
    per: 'namespace, %s, instance' % c.podLabel,
    pod: '{{%s}}' % c.podLabel,
  },
  local ds = { datasource: { type: 'prometheus', uid: '${datasource}' } },
  local variable(name, label, query) = ds {
    name: name,
    label: label,
    type: 'query',
    definition: query,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-' + name, qryType: 1 },
    current: {},
    hide: 0,
    includeAll: true,
    // "All" is a regular expression that also matches a missing label
    // (no namespace or pod outside Kubernetes).
    allValue: '.*',
    multi: true,
    options: [],
    refresh: 2,
    regex: '',
    skipUrlSync: false,
    sort: 1,
  },
  local timeseries(id, title, description, gridPos, unit, targets) = ds {
    type: 'timeseries',
    id: id,
    title: title,
    description: description,
    gridPos: gridPos,
    targets: [ds + t for t in targets],
    fieldConfig: { defaults: { unit: unit, custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: 10, showPoints: 'never', spanNulls: false, lineInterpolation: 'linear', stacking: { mode: 'none', group: 'A' } }, color: { mode: 'palette-classic' }, min: 0 }, overrides: [] },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  },

  grafanaDashboards+:: {
    'jobloop.json': {
      uid: c.dashboardUID,
      title: c.dashboardTitle,
      description: 'jobloop: state, outcomes, durations, failures and halts per pod, cost per run, and the fleet. Metrics per SPEC section 7; alerts and runbook in alerts/ (rendered from mixin/).',
      tags: ['jobloop'],
      id: null,
      version: 1,
      editable: true,
      graphTooltip: 1,
      schemaVersion: 39,
      timezone: c.dashboardTimezone,
      time: { from: 'now-1h', to: 'now' },
      refresh: c.dashboardRefresh,
      fiscalYearStartMonth: 0,
      liveNow: false,
      links: [],
      annotations: { list: [
        {
          builtIn: 1,
          datasource: { type: 'grafana', uid: '-- Grafana --' },
          enable: true,
          hide: true,
          iconColor: 'rgba(0, 211, 255, 1)',
          name: 'Annotations & Alerts',
          type: 'dashboard',
        },
        // jobloop's alerts (Prometheus' ALERTS series) as annotations on
        // every time series panel.
        ds {
          enable: true,
          hide: false,
          iconColor: 'red',
          name: 'jobloop alerts',
          expr: 'ALERTS{alertname=~"Jobloop.+", alertstate="firing", namespace=~"$namespace", job=~"$job"}',
          step: '1m',
          titleFormat: '{{alertname}}',
          textFormat: '{{severity}} {{namespace}} {{%s}}' % c.podLabel,
          tagKeys: 'severity',
          useValueForTime: false,
        },
      ] },
      templating: { list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          current: {},
          hide: 0,
          includeAll: false,
          multi: false,
          options: [],
          refresh: 1,
          regex: '',
          skipUrlSync: false,
        },
        variable('namespace', 'Namespace', 'label_values(jobloop_build_info{%s}, namespace)' % c.jobloopSelector),
        variable('job', 'Job', 'label_values(jobloop_build_info{%s, namespace=~"$namespace"}, job)' % c.jobloopSelector),
        variable('pod', 'Pod', 'label_values(jobloop_build_info{%s}, %s)' % [v.fleet, c.podLabel]),
      ] },
      panels: (import 'panels-pods.libsonnet')(v, ds) + (import 'panels-fleet.libsonnet')(v, ds) + [
        { type: 'row', id: 33, title: 'Utilisation and cost per run', collapsed: false, gridPos: { h: 1, w: 24, x: 0, y: 88 }, panels: [] },
        timeseries(
          34,
          'Utilisation (share of time a job runs)',
          'rate(jobloop_busy_seconds_total): the share of wall time each pod spends running a job (1 = always busy). It grows while a job runs, not only when it ends. The HorizontalPodAutoscaler of deploy/kubernetes scales the fleet on its average.',
          { h: 8, w: 8, x: 0, y: 89 },
          'percentunit',
          [{ expr: 'sum by (%(per)s) (rate(jobloop_busy_seconds_total{%(sel)s}[$__rate_interval]))' % v, legendFormat: v.pod, range: true, refId: 'A' }],
        ),
        timeseries(
          35,
          'Job CPU per run',
          'CPU seconds (user + system, the job and the descendants it waited for) per finished run: jobloop_job_cpu_seconds_total over the runs in the same interval. Gaps: no run finished in that interval.',
          { h: 8, w: 8, x: 8, y: 89 },
          's',
          [{ expr: 'sum by (%(per)s) (rate(jobloop_job_cpu_seconds_total{%(sel)s}[$__rate_interval])) / sum by (%(per)s) (rate(jobloop_iterations_total{%(sel)s}[$__rate_interval]))' % v, legendFormat: v.pod, range: true, refId: 'A' }],
        ),
        timeseries(
          36,
          'Peak memory of the last job',
          'jobloop_job_max_rss_bytes: the peak resident memory of the last finished job (the largest of it and its waited-for descendants). Compare it with the container memory limit, which the job shares with jobloop.',
          { h: 8, w: 8, x: 16, y: 89 },
          'bytes',
          [{ expr: 'max by (%(per)s) (jobloop_job_max_rss_bytes{%(sel)s})' % v, legendFormat: v.pod, range: true, refId: 'A' }],
        ),
      ],
    },
  },
}
