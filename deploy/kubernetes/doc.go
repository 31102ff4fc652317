// Package kubernetes holds no code: it is the home of Sluice's Kubernetes
// manifests (a kustomize base, components and overlays: a shared Deployment
// behind a standalone Envoy, Envoy and Sluice in one pod, Istio's ingress
// gateway, Istio's global rate limit set-up, Envoy Gateway) and of the tests
// that check them.
//
// The tests render every overlay with `kubectl kustomize` (scripts/services.sh
// installs kubectl; under CI=true its absence fails them) and then decode each
// object strictly into its Go API type (k8s.io/api, istio.io/api, Envoy
// Gateway's, Gateway API's and prometheus-operator's), validate each custom
// resource against its CRD's OpenAPI schema and CEL rules as published in the
// owning project's module, decode every Envoy fragment inside an EnvoyFilter or
// EnvoyPatchPolicy into go-control-plane's types and validate it, compare those
// fragments, and the connection managers Istio and Envoy Gateway end up with,
// with envoy/envoy.yaml, run `sluice check-config --envoy`'s cross-check on the
// overlays that run envoy.yaml, and check the rendered objects against each
// other and against the Sluice config they carry (ports, probes, selectors,
// who may reach which port under the NetworkPolicies, pinned images, secrets
// only from a Secret).
//
// Generated files: the copies kustomize needs inside its root (the rules,
// envoy.yaml, the dashboard, the alert rules) and the fragments of envoy.yaml
// the manifests carry (fragments_test.go) are checked equal to their single
// source; `go test -update` rewrites them before the tests run.
//
// It is a Go module of its own so that the Kubernetes, Istio, Envoy Gateway and
// prometheus-operator modules (and the API server's validation code) stay out
// of the dependency graph of Sluice itself; scripts/test.sh runs its tests.
package kubernetes
