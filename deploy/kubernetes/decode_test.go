package kubernetes

import (
	"fmt"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	istionetworking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	k8sjson "sigs.k8s.io/json"
)

// envoyFilter is Istio's EnvoyFilter resource: Kubernetes metadata around the
// istio.io/api message, which is decoded with protojson (istio.io/api's own
// JSON unmarshaler allows unknown fields; protojson does not).
type envoyFilter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              rawJSON `json:"spec"`
	spec              *istionetworking.EnvoyFilter
}

// rawJSON keeps a field's JSON for a decoder of its own.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

// apiTypes maps apiVersion and kind to the Go type of the owning project's API module.
var apiTypes = map[[2]string]func() any{
	{"v1", "ConfigMap"}:                                        func() any { return &corev1.ConfigMap{} },
	{"v1", "Service"}:                                          func() any { return &corev1.Service{} },
	{"v1", "ServiceAccount"}:                                   func() any { return &corev1.ServiceAccount{} },
	{"apps/v1", "Deployment"}:                                  func() any { return &appsv1.Deployment{} },
	{"policy/v1", "PodDisruptionBudget"}:                       func() any { return &policyv1.PodDisruptionBudget{} },
	{"autoscaling/v2", "HorizontalPodAutoscaler"}:              func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	{"networking.k8s.io/v1", "NetworkPolicy"}:                  func() any { return &networkingv1.NetworkPolicy{} },
	{"monitoring.coreos.com/v1", "ServiceMonitor"}:             func() any { return &monitoringv1.ServiceMonitor{} },
	{"monitoring.coreos.com/v1", "PrometheusRule"}:             func() any { return &monitoringv1.PrometheusRule{} },
	{"networking.istio.io/v1alpha3", "EnvoyFilter"}:            func() any { return &envoyFilter{} },
	{"gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"}: func() any { return &egv1a1.EnvoyExtensionPolicy{} },
	{"gateway.envoyproxy.io/v1alpha1", "EnvoyPatchPolicy"}:     func() any { return &egv1a1.EnvoyPatchPolicy{} },
	{"gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"}:           func() any { return &egv1a1.EnvoyProxy{} },
	{"gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"}:  func() any { return &egv1a1.ClientTrafficPolicy{} },
	{"gateway.networking.k8s.io/v1", "Gateway"}:                func() any { return &gwapiv1.Gateway{} },
	{"gateway.networking.k8s.io/v1", "HTTPRoute"}:              func() any { return &gwapiv1.HTTPRoute{} },
	{"gateway.networking.k8s.io/v1beta1", "ReferenceGrant"}:    func() any { return &gwapiv1b1.ReferenceGrant{} },
}

// decodeStrict decodes o into its Go API type the way the API server's strict
// field validation does (sigs.k8s.io/json: unknown and duplicate fields are
// errors, names match case-sensitively).
func decodeStrict(o *object) (any, error) {
	newT, ok := apiTypes[[2]string{o.APIVersion, o.Kind}]
	if !ok {
		return nil, fmt.Errorf("no Go API type known for %s %s: add it to apiTypes", o.APIVersion, o.Kind)
	}
	v := newT()
	strict, err := k8sjson.UnmarshalStrict(o.JSON, v)
	if err != nil {
		return nil, err
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("strict decoding: %v", strict)
	}
	if ef, ok := v.(*envoyFilter); ok {
		ef.spec = &istionetworking.EnvoyFilter{}
		if err := (protojson.UnmarshalOptions{}).Unmarshal(ef.Spec, ef.spec); err != nil {
			return nil, fmt.Errorf("spec: %w", err)
		}
	}
	return v, nil
}

// decodeAs decodes o strictly into T or fails the test.
func decodeAs[T any](t *testing.T, o *object) T {
	t.Helper()
	v, err := decodeStrict(o)
	if err != nil {
		t.Fatalf("%s: %v", o, err)
	}
	tv, ok := v.(T)
	if !ok {
		t.Fatalf("%s decodes to %T", o, v)
	}
	return tv
}

func TestStrictDecode(t *testing.T) {
	for _, o := range allObjects(t) {
		if _, err := decodeStrict(o); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
}

// TestStrictDecodeRejects proves the decoders refuse what the API server's
// strict validation would: a misspelt field, a field in the wrong case, one
// given twice, and an unknown field inside an EnvoyFilter's istio.io/api spec.
func TestStrictDecodeRejects(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selektor: {a: b}}\n"},
		{"field case", "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {Selector: {a: b}}\n"},
		{"unknown field in a typed CR", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: a}\nspec: {endpoints: [{port: x, intervall: 5s}]}\n"},
		{"unknown field in an EnvoyFilter spec", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nspec: {configPatches: [{applyTo: HTTP_FILTER, patchh: {}}]}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := parseObjects([]byte(tt.doc), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeStrict(objs[0]); err == nil {
				t.Error("decoded without error")
			}
		})
	}
	if _, err := parseObjects([]byte("apiVersion: v1\napiVersion: v1\n"), "dup"); err == nil {
		t.Error("a key given twice parsed")
	}
}
