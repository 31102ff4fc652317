package config

import (
	"strings"
	"testing"
)

// FuzzParse decodes arbitrary bytes as a Sluice config file, applies the
// defaults and validates the result, as `sluice serve --config` does. It
// must never panic or hang (YAML aliases, deep nesting, odd scalars in
// every typed field), a document Parse accepts must keep its defaults
// applied idempotently, and Validate must be deterministic.
//
// Seeds: testdata/fuzz/FuzzParse, plus the documents below.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"server: {grpc_addr: ':8081'}\nlog: {level: debug, format: text}\n",
		"redis: {url: 'redis://localhost:6379/0', key_prefix: 'x:'}\nratelimit: {timeout: 20ms, headers: ietf}\n",
		"extproc:\n  identity: {source: jwt_metadata, jwt_metadata: {tenant_claim: jwt_payload.tenant_id}}\n",
		"cache: {enabled: false}\nbatch: {max_items: 5, path_prefixes: [/api/]}\n",
		"a: &a [*a, *a]\n",
		strings.Repeat("[", 5000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		d := c.WithDefaults()
		if again := d.WithDefaults(); !sameValidation(d, again) {
			t.Fatalf("WithDefaults is not idempotent for %q", data)
		}
		e1, e2 := d.Validate(), d.Validate()
		if (e1 == nil) != (e2 == nil) || (e1 != nil && e1.Error() != e2.Error()) {
			t.Fatalf("Validate differs between calls: %v / %v", e1, e2)
		}
	})
}

// sameValidation compares two configs by what Validate says of them.
func sameValidation(a, b Config) bool {
	ea, eb := a.Validate(), b.Validate()
	if ea == nil || eb == nil {
		return ea == nil && eb == nil
	}
	return ea.Error() == eb.Error()
}
