// What scripts/render-mixin.py writes: each shipped file as data (the
// script only turns it into YAML or JSON and adds the header comment).
// Rendered with the defaults of config.libsonnet, except the
// annotation-scraping rule file the promtool tests load.
local jobloop = import 'mixin.libsonnet';
local annotationScraping = jobloop {
  _config+:: { jobloopSelector: 'job="kubernetes-pods", app_kubernetes_io_name="jobloop"' },
};
{
  'alerts/jobloop.rules.yml': jobloop.prometheusAlerts,
  'alerts/tests/rules/annotation-scraping.rules.yml': annotationScraping.prometheusAlerts,
  'dashboards/jobloop.json': jobloop.grafanaDashboards['jobloop.json'],
  'deploy/kubernetes/prometheusrule.yaml': {
    apiVersion: 'monitoring.coreos.com/v1',
    kind: 'PrometheusRule',
    metadata: {
      name: 'jobloop',
      labels: {
        'app.kubernetes.io/name': 'jobloop',
        'app.kubernetes.io/instance': 'jobloop',
        // The crate version (Cargo.toml), passed by scripts/render-mixin.py.
        'app.kubernetes.io/version': std.extVar('version'),
        'app.kubernetes.io/component': 'monitoring',
        'app.kubernetes.io/part-of': 'jobloop',
      },
    },
    spec: jobloop.prometheusAlerts,
  },
}
