package cachefilter

import (
	"slices"
	"strings"
	"testing"
)

// checkStorableWants checks the decisions a testdata/storable case states in
// its "want: key=value ..." lines against dump, the output of polGoldenRun
// for the case. The .golden file pins the whole dump; these lines pin what
// matters (stored or not and why, lifetime, stale windows, the actions over
// time, the fields kept), and -update does not rewrite them, so it cannot
// quietly accept a change of those. Every case must state at least stored.
//
// Keys: stored, reason, route, lifetime, initial_age,
// stale_while_revalidate, stale_if_error, must_revalidate, no_cache (the
// dump's values); vary and tags (comma-separated); actions (the Evaluate
// actions at the dump's three times, comma-separated); fields and
// not_fields (stored header names that must, or must not, be there).
func checkStorableWants(t *testing.T, in, dump string) {
	t.Helper()
	facts := map[string]string{}
	var actions, fields []string
	inHeader := false
	for _, l := range strings.Split(dump, "\n") {
		if inHeader && strings.HasPrefix(l, "  ") {
			name, _, _ := strings.Cut(strings.TrimPrefix(l, "  "), ": ")
			fields = append(fields, name)
			continue
		}
		inHeader = false
		key, value, ok := strings.Cut(l, ": ")
		switch {
		case l == "header:":
			inHeader = true
		case strings.HasPrefix(l, "evaluate "):
			_, rest, _ := strings.Cut(l, ": ")
			actions = append(actions, strings.Fields(rest)[0])
		case ok && (key == "vary" || key == "tags"):
			facts[key] = strings.Join(strings.Fields(strings.NewReplacer("[", "", "]", "", `"`, "").Replace(value)), ",")
		case ok:
			facts[key] = value
		}
	}
	facts["actions"] = strings.Join(actions, ",")

	stated := false
	for _, l := range strings.Split(in, "\n") {
		rest, ok := strings.CutPrefix(l, "want:")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			key, want, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("bad want %q", kv)
			}
			stated = stated || key == "stored"
			switch key {
			case "fields", "not_fields":
				for _, f := range strings.Split(want, ",") {
					if has := slices.Contains(fields, f); has != (key == "fields") {
						t.Errorf("stored header fields %v: %q present = %v", fields, f, has)
					}
				}
			default:
				got, known := facts[key]
				if !known && key != "reason" {
					t.Errorf("want %s: the dump has no %q", kv, key)
				}
				if got != want {
					t.Errorf("%s = %q, want %q", key, got, want)
				}
			}
		}
	}
	if !stated {
		t.Errorf("the case states no \"want: stored=...\": name the decisions that matter")
	}
}
