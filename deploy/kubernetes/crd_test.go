package kubernetes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	crd "github.com/prometheus-operator/prometheus-operator/example"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	k8sjson "sigs.k8s.io/json"
)

// crdSources lists where each project publishes its CRDs inside its Go
// module (the version go.mod pins), so the schemas are the ones the pinned
// API types were generated with.
func crdSources(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	read := func(mod, glob string) {
		matches, err := filepath.Glob(filepath.Join(moduleDir(t, mod), glob))
		if err != nil || len(matches) == 0 {
			t.Fatalf("no CRDs at %s in %s (%v)", glob, mod, err)
		}
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil {
				t.Fatal(err)
			}
			out[mod+": "+strings.TrimPrefix(m, moduleDir(t, mod))] = data
		}
	}
	read("istio.io/api", "kubernetes/customresourcedefinitions.gen.yaml")
	read("github.com/envoyproxy/gateway", "charts/gateway-helm/charts/crds/crds/generated/*.yaml")
	read("sigs.k8s.io/gateway-api", "config/crd/standard/*.yaml")
	// prometheus-operator embeds its CRDs in a package of its module.
	var b bytes.Buffer
	if err := crd.PrintAll(&b); err != nil {
		t.Fatal(err)
	}
	out["github.com/prometheus-operator/prometheus-operator/example"] = b.Bytes()
	return out
}

var (
	crdsOnce sync.Once
	crds     map[schema.GroupKind]*apiextensionsv1.CustomResourceDefinition
	crdsErr  error
)

// loadCRDs indexes every published CRD by group and kind.
func loadCRDs(t *testing.T) map[schema.GroupKind]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crdsOnce.Do(func() {
		crds = map[schema.GroupKind]*apiextensionsv1.CustomResourceDefinition{}
		for src, data := range crdSources(t) {
			objs, err := parseObjects(data, src)
			if err != nil {
				crdsErr = err
				return
			}
			for _, o := range objs {
				if o.Kind != "CustomResourceDefinition" {
					continue
				}
				var c apiextensionsv1.CustomResourceDefinition
				if _, err := k8sjson.UnmarshalStrict(o.JSON, &c); err != nil {
					crdsErr = fmt.Errorf("%s: %w", o, err)
					return
				}
				crds[schema.GroupKind{Group: c.Spec.Group, Kind: c.Spec.Names.Kind}] = &c
			}
		}
	})
	if crdsErr != nil {
		t.Fatal(crdsErr)
	}
	return crds
}

// validateCR checks a custom resource as the API server does on create with
// strict field validation: fields the schema does not know (pruning) are
// errors, defaults are applied, then the OpenAPI schema and the CRD's CEL
// rules (x-kubernetes-validations) are checked.
func validateCR(t *testing.T, o *object) error {
	t.Helper()
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil {
		return err
	}
	c, ok := loadCRDs(t)[schema.GroupKind{Group: gv.Group, Kind: o.Kind}]
	if !ok {
		return fmt.Errorf("no published CRD for %s %s", o.APIVersion, o.Kind)
	}
	var ver *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range c.Spec.Versions {
		if c.Spec.Versions[i].Name == gv.Version {
			ver = &c.Spec.Versions[i]
		}
	}
	if ver == nil || !ver.Served {
		return fmt.Errorf("CRD %s does not serve version %s", c.Name, gv.Version)
	}
	if ver.Schema == nil || ver.Schema.OpenAPIV3Schema == nil {
		return fmt.Errorf("CRD %s %s has no schema", c.Name, gv.Version)
	}
	var internal apiextensions.JSONSchemaProps
	if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(ver.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
		return err
	}
	ss, err := structuralschema.NewStructural(&internal)
	if err != nil {
		return fmt.Errorf("CRD %s: structural schema: %w", c.Name, err)
	}
	var u map[string]any
	if err := utiljson.Unmarshal(o.JSON, &u); err != nil {
		return err
	}
	opts := structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}
	if unknown := pruning.PruneWithOptions(u, ss, true, opts); len(unknown) > 0 {
		return fmt.Errorf("unknown fields: %s", strings.Join(unknown, ", "))
	}
	structuraldefaulting.Default(u, ss)
	v, _, err := apiservervalidation.NewSchemaValidator(&internal)
	if err != nil {
		return err
	}
	var errs []string
	for _, e := range apiservervalidation.ValidateCustomResource(nil, u, v) {
		errs = append(errs, e.Error())
	}
	celErrs, _ := cel.NewValidator(ss, true, celconfig.PerCallLimit).Validate(context.Background(), nil, ss, u, nil, celconfig.RuntimeCELCostBudget)
	for _, e := range celErrs {
		errs = append(errs, e.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// builtin are the groups the API server itself serves (no CRD).
var builtin = map[string]bool{"": true, "apps": true, "policy": true, "autoscaling": true, "networking.k8s.io": true}

func TestCustomResourcesValidate(t *testing.T) {
	n := 0
	for _, o := range allObjects(t) {
		gv, _ := schema.ParseGroupVersion(o.APIVersion)
		if builtin[gv.Group] {
			continue
		}
		n++
		if err := validateCR(t, o); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	if n < 10 {
		t.Errorf("only %d custom resources validated", n)
	}
}

// TestCRDValidationRejects proves each check can fail: an unknown field
// (pruning), a schema violation (enum), and a CEL rule.
func TestCRDValidationRejects(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"unknown field", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: a}\nspec: {selector: {}, endpoints: [{port: x, bogus: 1}]}\n"},
		{"enum", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: a}\nspec: {configPatches: [{applyTo: NO_SUCH_THING}]}\n"},
		// Envoy Gateway: exactly one of targetRef/targetRefs/targetSelectors (a CEL rule).
		{"cel rule", "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nmetadata: {name: a}\nspec: {extProc: [{backendRefs: [{name: s, port: 1}]}]}\n"},
		{"unknown kind", "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFiltre\nmetadata: {name: a}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := parseObjects([]byte(tt.doc), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			err = validateCR(t, objs[0])
			if err == nil {
				t.Fatal("validated")
			}
			t.Logf("rejected: %v", err)
		})
	}
}
