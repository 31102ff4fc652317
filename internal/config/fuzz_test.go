package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse decodes arbitrary bytes as a Sluice config file, applies the
// defaults and validates the result, as `sluice serve --config` does. It
// must never panic or hang (YAML aliases, merge keys, deep nesting, odd
// scalars in every typed field); every problem must be an *Error naming the
// file and a line of it (or none); defaults must apply idempotently, and
// Validate must be deterministic.
//
// Seeds: testdata/fuzz/FuzzParse, plus the documents below.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"server: {grpc_addr: ':8081'}\nlog: {level: debug, format: text}\n",
		"redis: {url: 'redis://localhost:6379/0', key_prefix: 'x:'}\nratelimit: {timeout: 20ms, headers: ietf}\n",
		"extproc:\n  identity: {source: jwt_metadata, jwt_metadata: {tenant_claim: jwt_payload.tenant_id}}\n",
		"cache: {enabled: false}\nbatch: {max_items: 5, path_prefixes: [/api/]}\n",
		"server:\n  grpc_addr: x\n admin_addr: y\n",
		"log: {<<: [{level: debug}, {format: text}], level: warn}\n",
		"cache:\n  routes:\n    - &r {name: a, prefix: /a}\n    - <<: *r\n      name: b\n",
		"a: &a [*a, *a]\n",
		strings.Repeat("[", 5000),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lines := bytes.Count(data, []byte("\n")) + 1
		checkProblems := func(err error) {
			t.Helper()
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 || len(ce.Problems) > maxProblems {
				t.Fatalf("error %T %v: want an *Error with 1 to %d problems", err, err, maxProblems)
			}
			for _, p := range ce.Problems {
				if p.File != "fuzz.yaml" || p.Msg == "" || p.Line < 0 || p.Line > lines {
					t.Fatalf("bad problem %+v (%d lines)", p, lines)
				}
			}
		}
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			checkProblems(err)
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
		if e1 != nil {
			checkProblems(e1)
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
