package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/envoy"
)

// Envoy fragments: parts of envoy/envoy.yaml that a manifest carries as they
// are (Istio's EnvoyFilters, Envoy Gateway's EnvoyPatchPolicies), so that a
// change to envoy.yaml reaches them with `go test -update` instead of by hand.
// A manifest marks each with a comment line
//
//	# generated from envoy/envoy.yaml by `go test -update`: <selector> [<edit>...]
//
// directly above a `key:` line; that key's value is the fragment, rewritten
// from envoy.yaml with its comments. TestEnvoyFragments fails while a value
// differs from what envoy.yaml gives; the comparison tests (envoy_test.go)
// check what the fragments mean in place, so a selector that picks the wrong
// part of envoy.yaml fails there.
//
// Selectors:
//
//	ingress                        listener ingress's HTTP connection manager (its typed_config)
//	ingress.http_filters[NAME]     an element of a sequence, by its name
//	ingress.route_config.KEY       a mapping's value
//	clusters[NAME]                 a static cluster
//
// Edits:
//
//	only=K1,K2 / except=K1,K2      keep only, or drop, these keys of the selected mapping
//	grpc=CLUSTER authority=HOST    the gRPC service the selected filter calls (envoy_grpc)
//	name=NAME                      a cluster's name (and its load_assignment's cluster_name)
//	address=HOST                   a cluster's endpoint addresses
const fragmentMarker = "# generated from envoy/envoy.yaml by `go test -update`: "

// envoyYAMLNode parses envoy/envoy.yaml (the file Sluice embeds) as a YAML
// node tree, comments kept.
func envoyYAMLNode() (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(envoy.DefaultConfig, &doc); err != nil {
		return nil, fmt.Errorf("envoy/envoy.yaml: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("envoy/envoy.yaml: not one YAML document")
	}
	return doc.Content[0], nil
}

// mapValue returns the value of key in mapping n (aliases resolved), or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// named returns the element of sequence n whose `name` is name, or nil.
func named(n *yaml.Node, name string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	for _, e := range n.Content {
		if v := mapValue(e, "name"); v != nil && v.Value == name {
			return resolve(e)
		}
	}
	return nil
}

// splitPath splits a selector at the dots outside brackets.
func splitPath(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// selectNode resolves a selector against envoy.yaml's root mapping.
func selectNode(root *yaml.Node, selector string) (*yaml.Node, error) {
	segs := splitPath(selector)
	var n *yaml.Node
	if first := segs[0]; strings.HasPrefix(first, "clusters[") {
		n = mapValue(mapValue(root, "static_resources"), "clusters")
		segs[0] = first[len("clusters"):]
	} else {
		l := named(mapValue(mapValue(root, "static_resources"), "listeners"), first)
		fc := resolve(mapValue(l, "filter_chains"))
		if fc == nil || len(fc.Content) == 0 {
			return nil, fmt.Errorf("%s: envoy.yaml has no listener %q with a filter chain", selector, first)
		}
		n = mapValue(named(mapValue(fc.Content[0], "filters"), "envoy.filters.network.http_connection_manager"), "typed_config")
		if n == nil {
			return nil, fmt.Errorf("%s: listener %q has no http_connection_manager", selector, first)
		}
		segs = segs[1:]
	}
	for _, seg := range segs {
		key, name, indexed := strings.Cut(seg, "[")
		if key != "" {
			n = mapValue(n, key)
		}
		if indexed {
			n = named(n, strings.TrimSuffix(name, "]"))
		}
		if n == nil {
			return nil, fmt.Errorf("%s: envoy.yaml has nothing at %q", selector, seg)
		}
	}
	return n, nil
}

// copyNode deep-copies n, resolving aliases and dropping anchors.
func copyNode(n *yaml.Node) *yaml.Node {
	n = resolve(n)
	c := *n
	c.Anchor = ""
	c.Content = nil
	for _, e := range n.Content {
		c.Content = append(c.Content, copyNode(e))
	}
	return &c
}

// setKey sets key to a plain scalar value in mapping n, adding it last when
// absent.
func setKey(n *yaml.Node, key, value string) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			n.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			return
		}
	}
	n.Content = append(n.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// mappingsAt returns every mapping found under key in n's subtree.
func mappingsAt(n *yaml.Node, key string) []*yaml.Node {
	var out []*yaml.Node
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if v := n.Content[i+1]; n.Content[i].Value == key && v.Kind == yaml.MappingNode {
					out = append(out, v)
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return out
}

// fragment returns the node a marker's spec names, edits applied.
func fragment(root *yaml.Node, spec string) (*yaml.Node, error) {
	fields := strings.Fields(spec)
	if len(fields) == 0 {
		return nil, errors.New("empty fragment spec")
	}
	sel, err := selectNode(root, fields[0])
	if err != nil {
		return nil, err
	}
	n := copyNode(sel)
	for _, edit := range fields[1:] {
		op, arg, ok := strings.Cut(edit, "=")
		if !ok || arg == "" {
			return nil, fmt.Errorf("%s: edit %q is not op=value", spec, edit)
		}
		switch op {
		case "only", "except":
			if n.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s: %s= needs a mapping", spec, op)
			}
			keys := strings.Split(arg, ",")
			var kept []*yaml.Node
			found := map[string]bool{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				in := false
				for _, k := range keys {
					in = in || n.Content[i].Value == k
				}
				found[n.Content[i].Value] = true
				if in == (op == "only") {
					kept = append(kept, n.Content[i], n.Content[i+1])
				}
			}
			for _, k := range keys {
				if !found[k] {
					return nil, fmt.Errorf("%s: %s=: envoy.yaml has no key %q there", spec, op, k)
				}
			}
			n.Content = kept
		case "grpc", "authority":
			targets := mappingsAt(n, "envoy_grpc")
			if len(targets) != 1 {
				return nil, fmt.Errorf("%s: %s= needs exactly one envoy_grpc, found %d", spec, op, len(targets))
			}
			targets[0].Style = 0 // block: a mesh's cluster names are long
			key := map[string]string{"grpc": "cluster_name", "authority": "authority"}[op]
			setKey(targets[0], key, arg)
		case "name":
			setKey(n, "name", arg)
			la := mapValue(n, "load_assignment")
			if la == nil {
				return nil, fmt.Errorf("%s: name= needs a cluster with a load_assignment", spec)
			}
			setKey(la, "cluster_name", arg)
		case "address":
			addrs := mappingsAt(n, "socket_address")
			if len(addrs) == 0 {
				return nil, fmt.Errorf("%s: address= found no socket_address", spec)
			}
			for _, a := range addrs {
				setKey(a, "address", arg)
			}
		default:
			return nil, fmt.Errorf("%s: unknown edit %q", spec, op)
		}
	}
	return n, nil
}

// renderValue writes `key:` and n as the value of that key, the key at
// indent: a scalar on the key's line, a mapping indented two more spaces, a
// sequence at the key's indent (as every manifest here writes them).
func renderValue(indent, key string, n *yaml.Node) (string, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	enc.CompactSeqIndent()
	if err := enc.Encode(n); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	text := strings.TrimRight(b.String(), "\n")
	if n.Kind == yaml.ScalarNode {
		return indent + key + ": " + text + "\n", nil
	}
	inner := indent
	if n.Kind == yaml.MappingNode {
		inner += "  "
	}
	var out strings.Builder
	out.WriteString(indent + key + ":\n")
	for l := range strings.SplitSeq(text, "\n") {
		if l != "" {
			out.WriteString(inner)
		}
		out.WriteString(l + "\n")
	}
	return out.String(), nil
}

// region is one marked fragment of a manifest.
type region struct {
	line       int // of the key, 1-based
	spec       string
	start, end int // line indexes (0-based, end exclusive) of the key and its value
	want       string
}

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// valueEnd returns the index after the last line of the value of the key on
// line k: the lines indented deeper than the key, and the items of a
// sequence written at the key's own indentation; blank lines count only
// between such lines.
func valueEnd(lines []string, k int) int {
	indent := indentOf(lines[k])
	end, seq := k+1, false
	for j := k + 1; j < len(lines); j++ {
		l := lines[j]
		item := indentOf(l) == indent && strings.HasPrefix(strings.TrimSpace(l), "- ")
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case indentOf(l) > indent:
		case item && (seq || end == k+1):
			seq = true
		default:
			return end
		}
		end = j + 1
	}
	return end
}

// regenerate finds the marked fragments of a manifest and returns its text
// with each rewritten from envoy.yaml, and the regions found.
func regenerate(data []byte, root *yaml.Node) ([]byte, []region, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	var regions []region
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimSpace(lines[i])
		spec, ok := strings.CutPrefix(trimmed, fragmentMarker)
		if !ok {
			if strings.HasPrefix(trimmed, "# generated from envoy/envoy.yaml") {
				return nil, nil, fmt.Errorf("line %d: a marker must read %q followed by the spec", i+1, fragmentMarker)
			}
			continue
		}
		k := i + 1
		if k >= len(lines) {
			return nil, nil, fmt.Errorf("line %d: marker at the end of the file", i+1)
		}
		indent := indentOf(lines[k])
		key, _, ok := strings.Cut(strings.TrimSpace(lines[k]), ":")
		if indent != indentOf(lines[i]) || !ok || key == "" || strings.HasPrefix(key, "-") || strings.HasPrefix(key, "#") {
			return nil, nil, fmt.Errorf("line %d: the marker must be directly above a `key:` line at its own indentation", i+1)
		}
		end := valueEnd(lines, k)
		n, err := fragment(root, spec)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		want, err := renderValue(strings.Repeat(" ", indent), key, n)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		regions = append(regions, region{line: k + 1, spec: spec, start: k, end: end, want: want})
		i = end - 1
	}
	var out strings.Builder
	next := 0
	for _, r := range regions {
		for _, l := range lines[next:r.start] {
			out.WriteString(l + "\n")
		}
		out.WriteString(r.want)
		next = r.end
	}
	for _, l := range lines[next:] {
		out.WriteString(l + "\n")
	}
	return []byte(out.String()), regions, nil
}

// manifestFiles are the YAML files under deploy/kubernetes, envoy.yaml's
// copy aside.
func manifestFiles() ([]string, error) {
	var out []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) && p != filepath.Join("components", "envoy-config", "envoy.yaml") {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// updateFragments rewrites every marked fragment from envoy.yaml.
func updateFragments() error {
	root, err := envoyYAMLNode()
	if err != nil {
		return err
	}
	files, err := manifestFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		out, regions, err := regenerate(data, root)
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if len(regions) > 0 && !bytes.Equal(out, data) {
			if err := os.WriteFile(f, out, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// fragmentFiles are the manifests that must carry fragments of envoy.yaml.
var fragmentFiles = []string{
	"overlays/istio/gateway-envoyfilter.yaml",
	"overlays/istio/sidecar-envoyfilter.yaml",
	"overlays/envoy-gateway/gateway/patch-policies.yaml",
}

// TestEnvoyFragments: every marked fragment is what envoy.yaml gives today.
func TestEnvoyFragments(t *testing.T) {
	root, err := envoyYAMLNode()
	if err != nil {
		t.Fatal(err)
	}
	files, err := manifestFiles()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, regions, err := regenerate(data, root)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		counts[filepath.ToSlash(f)] = len(regions)
		if bytes.Equal(out, data) {
			continue
		}
		lines := strings.SplitAfter(string(data), "\n")
		for _, r := range regions {
			if got := strings.Join(lines[r.start:min(r.end, len(lines))], ""); got != r.want {
				t.Errorf("deploy/kubernetes/%s:%d: differs from envoy/envoy.yaml's %s: run `go test -update` in deploy/kubernetes\n got:\n%s\nwant:\n%s", f, r.line, r.spec, got, r.want)
			}
		}
	}
	for _, f := range fragmentFiles {
		if counts[f] == 0 {
			t.Errorf("%s carries no marked fragment of envoy.yaml", f)
		}
	}
}

// TestEnvoyFragmentsRegenerate pins the region rules and the edits on small
// manifests: what is replaced, what is left alone, and what is refused.
func TestEnvoyFragmentsRegenerate(t *testing.T) {
	root, err := envoyYAMLNode()
	if err != nil {
		t.Fatal(err)
	}
	m := "  " + fragmentMarker
	tests := []struct {
		name, in, want, err string
		contains            []string // instead of want
	}{{
		name: "scalar, stale, siblings kept",
		in:   "a:\n" + m + "ingress.http_filters[envoy.filters.http.ext_proc].typed_config.message_timeout\n  value: 9s\n  after: 1\n",
		want: "a:\n" + m + "ingress.http_filters[envoy.filters.http.ext_proc].typed_config.message_timeout\n  value: 0.2s\n  after: 1\n",
	}, {
		name: "sequence at the key's indent, then the next item of the outer list",
		in:   "ops:\n- op: add\n" + m + "internal.route_config.request_headers_to_remove\n  value:\n  - stale\n  - stale2\n- op: next\n",
		want: "ops:\n- op: add\n" + m + "internal.route_config.request_headers_to_remove\n  value:\n  - x-sluice-batch\n  - x-sluice-warm\n- op: next\n",
	}, {
		name: "mapping with only=, trailing blank line kept",
		in:   "p:\n" + m + "ingress.route_config only=name\n  value:\n    name: old\n\nq: 1\n",
		want: "p:\n" + m + "ingress.route_config only=name\n  value:\n    name: ingress\n\nq: 1\n",
	}, {
		name: "a blank line inside the old value goes with it",
		in:   "p:\n" + m + "ingress.route_config only=name\n  value:\n    a: 1\n\n    b: 2\nq: 1\n",
		want: "p:\n" + m + "ingress.route_config only=name\n  value:\n    name: ingress\nq: 1\n",
	}, {
		name: "gRPC target of a filter, block style",
		in:   "p:\n" + m + "ingress.http_filters[envoy.filters.http.ext_proc].typed_config.grpc_service grpc=c|1||s authority=s.ns\n  v: {}\n",
		want: "p:\n" + m + "ingress.http_filters[envoy.filters.http.ext_proc].typed_config.grpc_service grpc=c|1||s authority=s.ns\n  v:\n    envoy_grpc:\n      cluster_name: c|1||s\n      authority: s.ns\n",
	}, {
		name:     "cluster renamed and readdressed",
		in:       "p:\n" + m + "clusters[sluice] name=x address=h.ns\n  v: {}\n",
		contains: []string{"\n    name: x\n", "\n      cluster_name: x\n", "socket_address: {address: h.ns, port_value: 8081}", "grpc_health_check: {}"},
	}, {
		name: "name= on what is not a cluster",
		in:   "p:\n" + m + "clusters[sluice].load_assignment name=x\n  v: {}\n",
		err:  "name= needs a cluster",
	}, {
		name: "unknown selector",
		in:   "p:\n" + m + "ingress.no_such_key\n  v: 1\n",
		err:  `nothing at "no_such_key"`,
	}, {
		name: "unknown listener",
		in:   "p:\n" + m + "nowhere\n  v: 1\n",
		err:  `no listener "nowhere"`,
	}, {
		name: "only= naming a key envoy.yaml lacks",
		in:   "p:\n" + m + "ingress.route_config only=internal_only_headerz\n  v: 1\n",
		err:  `no key "internal_only_headerz"`,
	}, {
		name: "marker above a sequence item",
		in:   "p:\n" + m + "ingress.route_config\n  - v: 1\n",
		err:  "directly above a `key:` line",
	}, {
		name: "a misspelt marker is refused, not ignored",
		in:   "p:\n  # generated from envoy/envoy.yaml by go test: ingress\n  v: 1\n",
		err:  "a marker must read",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, regions, err := regenerate([]byte(tt.in), root)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v; want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(regions) != 1 {
				t.Errorf("%d regions; want 1", len(regions))
			}
			for _, c := range tt.contains {
				if !strings.Contains(string(got), c) {
					t.Errorf("got:\n%s\nwant it to contain %q", got, c)
				}
			}
			if tt.contains == nil && string(got) != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
			// Regenerating the output changes nothing.
			again, _, err := regenerate(got, root)
			if err != nil || !bytes.Equal(again, got) {
				t.Errorf("not stable: %v\n%s", err, again)
			}
		})
	}
}
