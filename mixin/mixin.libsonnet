// The jobloop monitoring mixin (the kubernetes-mixin convention): _config,
// prometheusAlerts and grafanaDashboards. Plain jsonnet, no libraries.
//
//   local jobloop = (import 'mixin.libsonnet') + { _config+:: { ... } };
//   jobloop.prometheusAlerts            // {groups: [...]}, a Prometheus rule file
//   jobloop.grafanaDashboards['jobloop.json']
(import 'config.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
