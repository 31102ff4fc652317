// Package deploy holds no code: it is the home of the deployment files (the
// Sluice config of the compose stack, Prometheus config, rules and rule
// tests, Grafana provisioning and dashboard, deploy/README.md) and of the
// tests that check them, together with the repository's Dockerfile,
// .dockerignore and docker-compose.yaml, against each other and against
// envoy/envoy.yaml, the Sluice config loader, the rate limit rule loader and
// the metrics a running Sluice registers. No Docker engine, Envoy, Prometheus
// or Grafana runs in these tests; promtool does, when installed
// (scripts/services.sh installs it, and CI=true makes its absence a failure).
package deploy
