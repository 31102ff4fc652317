package ratelimitsvc

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/internal/yamlerr"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// Bounds on what one rules file may ask of the loader, so that no input can
// exhaust memory or time.
const (
	// MaxRulesFileSize is the largest rules file accepted (4 MiB).
	MaxRulesFileSize = 4 << 20
	// MaxDescriptorDepth bounds the nesting of descriptor lists, and of
	// metadata and merge keys (32 levels).
	MaxDescriptorDepth = 32
	// aliasWork bounds the YAML nodes that aliases may add to the walk of one
	// file beyond its own nodes (each expansion counts again): a small file of
	// nested aliases (a "billion laughs") fails here, in well under a second
	// and some tens of MB, instead of running for ever.
	aliasWork = 1 << 20
	// maxProblems bounds the problems one ParseRules reports.
	maxProblems = 100
	// maxWindow bounds unit times unit_multiplier (ten 365-day years), far
	// below time.Duration's limit.
	maxWindow = 10 * 365 * 24 * time.Hour
)

// File is one rules file: a name for messages and its YAML content.
type File struct {
	Name string
	Data []byte
}

// Problem is one thing wrong with the rules, at a line of a file (Line 0
// when no line applies).
type Problem struct {
	File string
	Line int
	Msg  string
}

// String formats p as "file:line: message".
func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.File, p.Msg)
}

// ConfigError lists every problem found in a set of rules files.
type ConfigError struct {
	Problems []Problem
}

// Error lists the problems one per line as "file:line: message".
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// LoadRules reads the rules files at path (see ReadRuleFiles) and parses
// them (see ParseRules).
func LoadRules(path string) (*Rules, error) {
	files, err := ReadRuleFiles(path)
	if err != nil {
		return nil, err
	}
	return ParseRules(files)
}

// ReadRuleFiles reads the rules files at path: the file itself, or every
// *.yaml and *.yml file directly inside a directory, in name order. Names
// starting with "." are skipped: hidden files, and the ..data and
// ..<timestamp> entries of a Kubernetes ConfigMap volume, whose files are read
// once, through their top-level symlinks (name -> ..data/name), and named so.
// Subdirectories are not read. An unreadable path is returned wrapped (for
// errors.Is(err, fs.ErrNotExist)); an unreadable or oversized file, a
// dangling symlink or a directory without rules files is a *ConfigError.
func ReadRuleFiles(path string) ([]File, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ratelimit: read rules: %w", err)
	}
	if !info.IsDir() {
		f, p := readRulesFile(path)
		if p != nil {
			return nil, &ConfigError{Problems: []Problem{*p}}
		}
		return []File{f}, nil
	}
	entries, err := os.ReadDir(path) // sorted by name
	if err != nil {
		return nil, fmt.Errorf("ratelimit: read rules: %w", err)
	}
	var (
		files    []File
		problems []Problem
	)
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		full := filepath.Join(path, name)
		// Stat follows the ConfigMap symlinks to the real file.
		fi, err := os.Stat(full)
		if err != nil {
			problems = append(problems, Problem{File: full, Msg: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		if fi.IsDir() {
			continue
		}
		f, p := readRulesFile(full)
		if p != nil {
			problems = append(problems, *p)
			continue
		}
		files = append(files, f)
	}
	if len(files) == 0 && len(problems) == 0 {
		problems = append(problems, Problem{File: path, Msg: "no *.yaml or *.yml rules files in directory"})
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return files, nil
}

// readRulesFile reads at most MaxRulesFileSize bytes of a file.
func readRulesFile(path string) (File, *Problem) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, &Problem{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxRulesFileSize+1))
	if err != nil {
		return File{}, &Problem{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	if len(data) > MaxRulesFileSize {
		return File{}, &Problem{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", MaxRulesFileSize)}
	}
	return File{Name: path, Data: data}, nil
}

// ParseRules validates rules files written in envoyproxy/ratelimit's YAML
// format and builds the rule set. The problems of every file are collected
// (each as "file:line: message") and returned as a *ConfigError.
//
// The format is envoyproxy/ratelimit's, read unchanged (README "The
// configuration format", src/config/config_impl.go):
//
//	domain: <name, unique across files>
//	descriptors:
//	  - key: <required>
//	    value: <optional: exact value; "" matches any value, each value counted
//	           apart; '*' anywhere matches any run of characters>
//	    rate_limit: {unit, requests_per_unit, unlimited, name, replaces: [{name}]}
//	    shadow_mode, quota_mode, detailed_metric, value_to_metric,
//	    share_threshold (wildcard values only: all matches share one counter),
//	    metadata: <mapping>
//	    descriptors: [...]   # nested, up to MaxDescriptorDepth levels
//
// Units are second, minute, hour, day, week, month (30 days) and year (365
// days), in any case. Sluice extensions, each optional:
//
//	domain level:     algorithm: sliding_window | sliding_window_lease | fixed_window
//	                                       (default sliding_window)
//	                  on_hot_key: exact | lease  (default exact)
//	                  failure_mode_deny: true  (fail closed without Redis; default false)
//	in a rate limit:  unit_multiplier: N  (window = N units, default 1)
//	                  algorithm: ...       (default: the domain's)
//	                  on_hot_key: ...      (default: the domain's)
//	                  sub_windows: N       (sliding window buckets, 1..120, default 10)
//	on a descriptor:  rate_limits: [ {...}, ... ]  (several limits at once, with
//	                  or instead of rate_limit; names must differ)
//
// sliding_window_lease is the sliding window decided in lease mode, and on_hot_key: lease lets
// a sliding window move to lease mode while its key is hot (see limiter.Mode); both need the
// sliding window.
//
// Checks, as envoyproxy/ratelimit makes them: unknown keys, an empty domain,
// a domain defined twice, an empty key, two descriptors with the same key and
// value at one level (envoyproxy's composite "key_value"), a bad unit,
// unlimited with a unit, an empty replaces name, and a limit replacing its own
// name. Sluice also rejects: a key that belongs to another level, duplicate
// mapping keys, a missing requests_per_unit (the README marks it required),
// unlimited with any other setting or beside other limits, share_threshold on
// a value without '*', replaces naming no limit of the domain, several YAML
// documents in one file, and values out of range. Merge keys ("<<") and
// anchors work as in envoyproxy; quota_mode applies as there (see
// Limit.Quota); value_to_metric and metadata are accepted (see Match), and
// metric labels never hold request values.
func ParseRules(files []File) (*Rules, error) {
	l := &loader{domains: map[string]*Domain{}}
	for _, f := range files {
		if d := l.parseFile(f); d != nil && !l.full() {
			if prev, dup := l.domains[d.Name]; dup {
				l.add(f.Name, d.Line, fmt.Sprintf("duplicate domain %q (also defined at %s)", clip(d.Name), source(prev.File, prev.Line)))
				continue
			}
			l.domains[d.Name] = d
		}
	}
	if len(l.problems) > 0 {
		return nil, &ConfigError{Problems: l.problems}
	}
	r := &Rules{domains: l.domains}
	for name := range l.domains {
		r.names = append(r.names, name)
	}
	slices.Sort(r.names)
	return r, nil
}

// loader collects the problems of one ParseRules.
type loader struct {
	problems []Problem
	seen     map[Problem]bool // problems already reported: aliases can repeat one
	domains  map[string]*Domain
}

func (l *loader) full() bool { return len(l.problems) >= maxProblems }

func (l *loader) add(file string, line int, msg string) {
	p := Problem{File: file, Line: line, Msg: msg}
	if l.seen[p] {
		return
	}
	if l.seen == nil {
		l.seen = map[Problem]bool{}
	}
	l.seen[p] = true
	switch {
	case len(l.problems) < maxProblems-1:
		l.problems = append(l.problems, p)
	case len(l.problems) == maxProblems-1:
		l.problems = append(l.problems, Problem{File: file, Msg: fmt.Sprintf("too many problems; stopped after %d", maxProblems-1)})
	}
}

// sortFrom orders the problems added since start by line, keeping the
// order of discovery within a line and the "too many problems" note last.
func (l *loader) sortFrom(start int) {
	end := len(l.problems)
	if l.full() {
		end--
	}
	if start < end {
		slices.SortStableFunc(l.problems[start:end], func(a, b Problem) int { return a.Line - b.Line })
	}
}

// parseFile checks one file and returns its domain, or nil after problems.
func (l *loader) parseFile(f File) *Domain {
	p := &parser{l: l, file: f.Name}
	start := len(l.problems)
	defer l.sortFrom(start)
	if len(f.Data) > MaxRulesFileSize {
		p.problem(0, fmt.Sprintf("file is larger than %d bytes", MaxRulesFileSize))
		return nil
	}
	if len(bytes.TrimSpace(f.Data)) == 0 {
		p.problem(0, "file is empty: want a mapping with domain and descriptors")
		return nil
	}
	if line := yamlerr.InvalidUTF8Line(f.Data); line > 0 {
		p.problem(line, "file is not valid UTF-8")
		return nil
	}
	doc, err := yamlerr.Document(f.Data)
	if err != nil {
		line, msg := yamlerr.Syntax(f.Data, err)
		p.problem(line, "invalid YAML: "+yamlerr.Hint(msg))
		return nil
	}
	if doc == nil || isNull(doc) {
		p.problem(0, "file is empty: want a mapping with domain and descriptors")
		return nil
	}
	p.budget = 2*treeSize(doc) + aliasWork
	d := p.domain(doc)
	if p.failed {
		return nil
	}
	return d
}

// parser walks the node tree of one file.
type parser struct {
	l      *loader
	file   string
	work   int  // visited nodes, each weighted 1 + its number of children
	budget int  // the most work allowed, see aliasWork
	over   bool // work exceeded budget (reported)
	failed bool // a problem was found, even if not listed (repeated or past maxProblems)
}

// treeSize counts the nodes of a parsed document without following aliases,
// so a file without aliases never runs out of work budget.
func treeSize(root *yaml.Node) int {
	n := 0
	stack := []*yaml.Node{root}
	for len(stack) > 0 {
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n++
		stack = append(stack, top.Content...)
	}
	return n
}

func (p *parser) problem(line int, msg string) {
	p.failed = true
	p.l.add(p.file, line, msg)
}

// problemf reports a problem, clipping long strings from the file so that
// no message grows with the input.
func (p *parser) problemf(line int, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok {
			args[i] = clip(s)
		}
	}
	p.problem(line, fmt.Sprintf(format, args...))
}

// clip shortens s to about 80 bytes for a message.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	i := max - 3
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// charge adds the cost of building a string of n bytes to the work budget:
// rule names grow with depth, and aliases can repeat deep descriptors.
func (p *parser) charge(n, line int) { p.spend(n/32, line) }

// resolve follows an alias and charges the node's size to the work budget.
// It returns nil once the budget is spent (after reporting it once) or when
// too many problems were found, so that every walk then ends quickly.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	if n == nil || p.stopped() {
		return nil
	}
	n = deref(n)
	p.spend(1+len(n.Content), n.Line)
	if p.stopped() {
		return nil
	}
	return n
}

// spend adds work and reports, once, when it exceeds the budget. Every walk
// that stops early therefore leaves a problem behind.
func (p *parser) spend(work, line int) {
	p.work += work
	if p.work > p.budget && !p.over {
		p.over = true
		p.problemf(line, "aliases expand the file by more than %d YAML nodes", aliasWork)
	}
}

// stopped reports whether the walk must end: work budget spent or too many problems.
func (p *parser) stopped() bool { return p.over || p.l.full() }

// deref follows an alias without charging the work budget.
func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "empty"
		}
		return fmt.Sprintf("%q", clip(n.Value))
	}
	return "not a value"
}

// pair is one key of a mapping, merge keys expanded.
type pair struct {
	name string
	line int
	val  *yaml.Node
}

// mapping returns the keys of a mapping node in order, expanding merge keys
// ("<<": explicit keys win, then earlier merged mappings). ok is false when n
// is not a mapping (reported as what) or the walk must stop.
func (p *parser) mapping(n *yaml.Node, what string, depth int) (pairs []pair, ok bool) {
	line := 0
	if n != nil {
		line = n.Line
	}
	n = p.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.problemf(n.Line, "%s must be a mapping, not %s", what, kindName(n))
		return nil, false
	}
	if depth > MaxDescriptorDepth {
		p.problemf(line, "%s nests merge keys deeper than %d levels", what, MaxDescriptorDepth)
		return nil, false
	}
	seen := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := p.resolve(n.Content[i])
		if k == nil {
			return nil, false
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, n.Content[i+1])
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.problemf(k.Line, "%s has a key that is %s; keys must be strings", what, kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.problemf(n.Content[i].Line, "duplicate key %q in %s (first at line %d)", k.Value, what, first)
			continue
		}
		seen[k.Value] = n.Content[i].Line
		pairs = append(pairs, pair{name: k.Value, line: n.Content[i].Line, val: n.Content[i+1]})
	}
	for _, m := range merges {
		var sources []*yaml.Node
		mr := p.resolve(m)
		if mr == nil {
			return nil, false
		}
		if mr.Kind == yaml.SequenceNode {
			sources = mr.Content
		} else {
			sources = []*yaml.Node{mr}
		}
		for _, s := range sources {
			if k := deref(s).Kind; k != yaml.MappingNode {
				p.problemf(s.Line, "the merge key (<<) of %s takes a mapping or a list of mappings, not %s", what, kindName(deref(s)))
				continue
			}
			merged, ok := p.mapping(s, what, depth+1)
			if !ok {
				if p.stopped() {
					return nil, false
				}
				continue
			}
			for _, kv := range merged {
				if _, dup := seen[kv.name]; !dup {
					seen[kv.name] = kv.line
					pairs = append(pairs, kv)
				}
			}
		}
	}
	return pairs, true
}

// sequence returns the items of a list node; a null node is an empty list.
func (p *parser) sequence(n *yaml.Node, what string) (items []*yaml.Node, ok bool) {
	if isNull(n) {
		return nil, true
	}
	n = p.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		p.problemf(n.Line, "%s must be a list, not %s", what, kindName(n))
		return nil, false
	}
	return n.Content, true
}

// str reads a scalar as its text, as yaml.v2 does for envoyproxy's string
// fields (`value: 1` is "1"); null is "".
func (p *parser) str(kv pair) (s string, ok bool) {
	n := p.resolve(kv.val)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		p.problemf(kv.line, "%s must be a string, not %s", kv.name, kindName(n))
		return "", false
	}
	if n.ShortTag() == "!!null" {
		return "", true
	}
	return n.Value, true
}

// boolean reads true or false; like yaml.v2 it also takes the YAML 1.1 words
// (yes, no, on, off, y, n) when unquoted. null is false.
func (p *parser) boolean(kv pair) bool {
	n := p.resolve(kv.val)
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		switch tag := n.ShortTag(); {
		case tag == "!!null":
			return false
		case tag == "!!bool":
			if b, err := strconv.ParseBool(n.Value); err == nil {
				return b
			}
		case n.Style == 0:
			switch n.Value {
			case "y", "Y", "yes", "Yes", "YES", "on", "On", "ON":
				return true
			case "n", "N", "no", "No", "NO", "off", "Off", "OFF":
				return false
			}
		}
	}
	p.problemf(kv.line, "%s must be true or false, not %s", kv.name, kindName(n))
	return false
}

// uint reads a whole number in [lo, hi]; like yaml.v2 it takes a float with
// no fraction (1e3). ok is false after a problem.
func (p *parser) uint(kv pair, lo, hi uint64) (v uint64, ok bool) {
	n := p.resolve(kv.val)
	if n == nil {
		return 0, false
	}
	bad := func() (uint64, bool) {
		p.problemf(kv.line, "%s must be a whole number from %d to %d, not %s", kv.name, lo, hi, kindName(n))
		return 0, false
	}
	if n.Kind != yaml.ScalarNode {
		return bad()
	}
	switch n.ShortTag() {
	case "!!int":
		var u uint64
		if err := n.Decode(&u); err != nil {
			return bad()
		}
		v = u
	case "!!float":
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err != nil || f != math.Trunc(f) || f < 0 || f > float64(hi) {
			return bad()
		}
		v = uint64(f)
	default:
		return bad()
	}
	if v < lo || v > hi {
		return bad()
	}
	return v, true
}

// Keys valid at each level. envoyproxy/ratelimit checks every key against one
// list wherever it appears; Sluice also says where a misplaced key belongs.
var (
	rootKeys       = []string{"domain", "descriptors", "algorithm", "on_hot_key", "failure_mode_deny"}
	descriptorKeys = []string{"key", "value", "rate_limit", "rate_limits", "descriptors", "shadow_mode", "quota_mode", "detailed_metric", "value_to_metric", "share_threshold", "metadata"}
	rateLimitKeys  = []string{"unit", "requests_per_unit", "unlimited", "name", "replaces", "unit_multiplier", "algorithm", "on_hot_key", "sub_windows"}
	replacesKeys   = []string{"name"}
)

func (p *parser) unknownKey(kv pair, where string, valid []string) {
	var belongs []string
	for _, l := range []struct {
		where string
		keys  []string
	}{{"the top level", rootKeys}, {"a descriptor", descriptorKeys}, {"a rate limit", rateLimitKeys}} {
		if l.where != where && slices.Contains(l.keys, kv.name) {
			belongs = append(belongs, l.where)
		}
	}
	if len(belongs) > 0 {
		p.problemf(kv.line, "key %q belongs in "+strings.Join(belongs, " or ")+", not in %s", kv.name, where)
		return
	}
	// The list of valid keys is part of the format so that it is not clipped.
	p.problemf(kv.line, "unknown key %q in %s (valid: "+strings.Join(valid, ", ")+")", kv.name, where)
}

// domain reads the top-level mapping of a file.
func (p *parser) domain(root *yaml.Node) *Domain {
	pairs, ok := p.mapping(root, "the top level", 0)
	if !ok {
		return nil
	}
	d := &Domain{File: p.file, Line: root.Line, Algorithm: limiter.SlidingWindow}
	var descs *pair
	nameOK := true
	for i, kv := range pairs {
		switch kv.name {
		case "domain":
			d.Name, nameOK = p.str(kv)
			d.Line = kv.line
		case "descriptors":
			descs = &pairs[i]
		case "algorithm":
			if a, ok := p.algorithm(kv); ok {
				d.Algorithm, d.Mode = a.alg, a.mode
			}
		case "on_hot_key":
			if v, ok := p.onHotKey(kv); ok {
				d.HotKeyLease = v
			}
		case "failure_mode_deny":
			d.FailureModeDeny, d.FailureModeSet = p.boolean(kv), true
		default:
			p.unknownKey(kv, "the top level", rootKeys)
		}
	}
	if d.Name == "" && nameOK {
		p.problem(d.Line, "domain is missing or empty")
	}
	if descs != nil {
		d.root = p.level(*descs, d, "", 1)
	}
	p.checkReplaces(d)
	return d
}

// algorithmName is one value of `algorithm`: how hits are counted, and how decisions are made.
type algorithmName struct {
	alg  limiter.Algorithm
	mode limiter.Mode
}

// algorithmNames are the values of `algorithm`.
var algorithmNames = map[string]algorithmName{
	"sliding_window":       {limiter.SlidingWindow, limiter.Exact},
	"sliding_window_lease": {limiter.SlidingWindow, limiter.Lease},
	"fixed_window":         {limiter.FixedWindow, limiter.Exact},
}

func (p *parser) algorithm(kv pair) (algorithmName, bool) {
	s, ok := p.str(kv)
	if !ok {
		return algorithmName{}, false
	}
	a, ok := algorithmNames[strings.ToLower(s)]
	if !ok {
		p.problemf(kv.line, "algorithm %q: want sliding_window, sliding_window_lease or fixed_window", s)
		return algorithmName{}, false
	}
	return a, true
}

// onHotKey reads `on_hot_key`: true for lease, false for exact.
func (p *parser) onHotKey(kv pair) (lease, ok bool) {
	s, ok := p.str(kv)
	if !ok {
		return false, false
	}
	switch strings.ToLower(s) {
	case "exact":
		return false, true
	case "lease":
		return true, true
	}
	p.problemf(kv.line, "on_hot_key %q: want exact or lease", s)
	return false, false
}

// level reads one descriptor list.
func (p *parser) level(kv pair, d *Domain, parent string, depth int) level {
	var lvl level
	items, ok := p.sequence(kv.val, "descriptors")
	if !ok || len(items) == 0 {
		return lvl
	}
	if depth > MaxDescriptorDepth {
		p.problemf(kv.line, "descriptors nested deeper than %d levels", MaxDescriptorDepth)
		return lvl
	}
	seen := map[string]*node{} // by envoyproxy's composite key
	for _, item := range items {
		n := p.descriptor(item, d, parent, depth)
		if n == nil {
			continue
		}
		composite := n.key
		if n.value != "" {
			composite += "_" + n.value
		}
		if prev := seen[composite]; prev != nil {
			if prev.key == n.key {
				p.problemf(n.line, "duplicate descriptor %q: same key and value as line %d", composite, prev.line)
			} else {
				// envoyproxy joins key and value with '_', so it cannot tell
				// these apart: it refuses the second as a repeat of the first
				// (src/config/config_impl.go).
				p.problemf(n.line, "descriptor %q collides with line %d: envoyproxy/ratelimit names both %q", composite, prev.line, composite)
			}
			continue
		}
		seen[composite] = n
		lvl.nodes = append(lvl.nodes, n)
		switch {
		case n.value == "":
			if lvl.keyOnly == nil {
				lvl.keyOnly = map[string]*node{}
			}
			lvl.keyOnly[n.key] = n
		default:
			if lvl.exact == nil {
				lvl.exact = map[Entry]*node{}
			}
			lvl.exact[Entry{n.key, n.value}] = n
			if n.parts != nil {
				if lvl.wildcard == nil {
					lvl.wildcard = map[string][]*node{}
				}
				lvl.wildcard[n.key] = append(lvl.wildcard[n.key], n)
			}
		}
	}
	return lvl
}

// descriptor reads one descriptor and its children; nil after a problem
// that leaves nothing to index.
func (p *parser) descriptor(item *yaml.Node, d *Domain, parent string, depth int) *node {
	pairs, ok := p.mapping(item, "a descriptor", 0)
	if !ok {
		return nil
	}
	n := &node{file: p.file, line: item.Line}
	var one, many, children *pair
	keyOK := true
	for i, kv := range pairs {
		switch kv.name {
		case "key":
			n.key, keyOK = p.str(kv)
		case "value":
			n.value, _ = p.str(kv)
		case "rate_limit":
			one = &pairs[i]
		case "rate_limits":
			many = &pairs[i]
		case "descriptors":
			children = &pairs[i]
		case "shadow_mode":
			n.shadow = p.boolean(kv)
		case "quota_mode":
			n.quota = p.boolean(kv)
		case "detailed_metric":
			n.detailed = p.boolean(kv)
		case "value_to_metric":
			n.toMetric = p.boolean(kv)
		case "share_threshold":
			n.share = p.boolean(kv)
		case "metadata":
			n.metadata = p.metadata(kv)
		default:
			p.unknownKey(kv, "a descriptor", descriptorKeys)
		}
	}
	if n.key == "" {
		if keyOK {
			// The reference refuses an empty key too (config_impl.go).
			p.problem(n.line, "descriptor has an empty key")
		}
		return nil
	}
	n.rule = n.key
	if n.value != "" {
		n.rule += "_" + n.value
	}
	if parent != "" {
		n.rule = parent + "." + n.rule
	}
	p.charge(len(n.rule), n.line)
	if strings.Contains(n.value, "*") {
		n.parts = strings.Split(n.value, "*")
	}
	if n.share && n.parts == nil {
		p.problemf(n.line, "share_threshold needs a wildcard value (containing '*'), but descriptor %q has none", n.rule)
	}

	// The limits: rate_limit first, then rate_limits, as one list.
	var limitNodes []*yaml.Node
	if one != nil && !isNull(one.val) {
		limitNodes = append(limitNodes, one.val)
	}
	if many != nil {
		items, _ := p.sequence(many.val, "rate_limits")
		limitNodes = append(limitNodes, items...)
	}
	names := map[string]int{}
	for i, ln := range limitNodes {
		l := p.rateLimit(ln, d)
		if l == nil {
			continue
		}
		l.Shadow, l.Quota, l.DetailedMetric = n.shadow, n.quota, n.detailed
		l.ID = l.Name
		if l.Name == "" {
			l.ID = n.rule + "#" + strconv.Itoa(i)
			p.charge(len(l.ID), l.Line)
		} else if first, dup := names[l.Name]; dup {
			p.problemf(l.Line, "two limits of descriptor %q are named %q (first at line %d)", n.rule, l.Name, first)
		} else {
			names[l.Name] = l.Line
		}
		l.finish()
		n.limits = append(n.limits, l)
	}
	for _, l := range n.limits {
		if l.Unlimited && len(limitNodes) > 1 {
			p.problemf(l.Line, "unlimited cannot be combined with other limits on descriptor %q", n.rule)
		}
		for _, r := range l.Replaces {
			if _, sibling := names[r]; sibling && r != l.Name {
				p.problemf(l.Line, "replaces %q, a limit of the same descriptor, which would never apply", r)
			}
		}
	}
	if children != nil {
		n.children = p.level(*children, d, n.rule, depth+1)
	}
	return n
}

// rateLimit reads one rate limit; nil after a problem that leaves none.
func (p *parser) rateLimit(v *yaml.Node, d *Domain) *Limit {
	pairs, ok := p.mapping(v, "a rate limit", 0)
	if !ok {
		return nil
	}
	l := &Limit{File: p.file, Line: v.Line, UnitMultiplier: 1, Algorithm: d.Algorithm, Mode: d.Mode}
	hotLease := d.HotKeyLease
	var unit, rpu, mult, alg, sub, hot *pair
	for i, kv := range pairs {
		switch kv.name {
		case "unit":
			unit = &pairs[i]
		case "requests_per_unit":
			rpu = &pairs[i]
		case "unlimited":
			l.Unlimited = p.boolean(kv)
		case "name":
			l.Name, _ = p.str(kv)
		case "replaces":
			l.Replaces = p.replaces(kv)
		case "unit_multiplier":
			mult = &pairs[i]
		case "algorithm":
			alg = &pairs[i]
		case "on_hot_key":
			hot = &pairs[i]
		case "sub_windows":
			sub = &pairs[i]
		default:
			p.unknownKey(kv, "a rate limit", rateLimitKeys)
		}
	}
	for _, r := range l.Replaces {
		if r == l.Name {
			// The reference refuses a limit that replaces its own name too
			// (config_impl.go).
			p.problemf(l.Line, "limit %q replaces its own name", r)
		}
	}
	if l.Unlimited {
		l.Mode = limiter.Exact
		for _, kv := range []*pair{unit, rpu, mult, alg, sub, hot} {
			if kv != nil && !isNull(kv.val) {
				// The reference refuses a unit on an unlimited limit too
				// (config_impl.go); Sluice also refuses every other setting.
				p.problemf(kv.line, "%s cannot be set on an unlimited rate limit", kv.name)
			}
		}
		return l
	}

	switch {
	case unit == nil || isNull(unit.val):
		p.problem(l.Line, "rate limit has no unit (want second, minute, hour, day, week, month or year)")
	default:
		s, ok := p.str(*unit)
		if !ok {
			break
		}
		u, ok := rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(s)]
		if !ok || u == int32(rlsv3.RateLimitResponse_RateLimit_UNKNOWN) {
			p.problemf(unit.line, "invalid rate limit unit %q (want second, minute, hour, day, week, month or year)", s)
		} else {
			l.Unit = rlsv3.RateLimitResponse_RateLimit_Unit(u)
		}
	}
	if rpu == nil || isNull(rpu.val) {
		p.problem(l.Line, "rate limit has no requests_per_unit")
	} else if v, ok := p.uint(*rpu, 0, math.MaxUint32); ok {
		l.RequestsPerUnit = v
	}
	if mult != nil && !isNull(mult.val) {
		if v, ok := p.uint(*mult, 1, math.MaxUint32); ok {
			l.UnitMultiplier = uint32(v)
		}
	}
	if unitLen, ok := UnitDuration(l.Unit); ok {
		if time.Duration(l.UnitMultiplier) > maxWindow/unitLen {
			// Only a unit_multiplier can make a window this long.
			p.problemf(mult.line, "unit_multiplier %d makes a window longer than %s", l.UnitMultiplier, maxWindow)
		} else {
			l.Window = unitLen * time.Duration(l.UnitMultiplier)
		}
	}
	if alg != nil && !isNull(alg.val) {
		if a, ok := p.algorithm(*alg); ok {
			l.Algorithm, l.Mode = a.alg, a.mode
		}
	}
	if hot != nil && !isNull(hot.val) {
		if v, ok := p.onHotKey(*hot); ok {
			hotLease = v
		}
	}
	if hotLease && l.Mode == limiter.Exact {
		if l.Algorithm != limiter.SlidingWindow {
			line := l.Line
			if hot != nil {
				line = hot.line
			}
			p.problemf(line, "on_hot_key: lease needs the sliding_window algorithm, not %s", l.Algorithm)
		} else {
			l.Mode = limiter.LeaseWhenHot
		}
	}
	switch {
	case l.Algorithm != limiter.SlidingWindow:
		l.SubWindows = 1
		if sub != nil && !isNull(sub.val) {
			p.problemf(sub.line, "sub_windows applies only to the sliding_window algorithm, not %s", l.Algorithm)
		}
	case sub != nil && !isNull(sub.val):
		if v, ok := p.uint(*sub, 1, limiter.MaxSubWindows); ok {
			l.SubWindows = int(v)
		}
	default:
		l.SubWindows = limiter.DefaultSubWindows
	}
	return l
}

// replaces reads `replaces: [{name: x}, ...]`.
func (p *parser) replaces(kv pair) []string {
	items, ok := p.sequence(kv.val, "replaces")
	if !ok {
		return nil
	}
	var out []string
	for _, item := range items {
		pairs, ok := p.mapping(item, "a replaces entry", 0)
		if !ok {
			continue
		}
		name, line := "", item.Line
		for _, e := range pairs {
			if e.name == "name" {
				name, _ = p.str(e)
				line = e.line
				continue
			}
			p.unknownKey(e, "a replaces entry", replacesKeys)
		}
		if name == "" {
			// The reference refuses a replaces entry without a name too
			// (config_impl.go).
			p.problem(line, "replaces entry has no name")
			continue
		}
		out = append(out, name)
	}
	return out
}

// checkReplaces reports replaces names that no limit of the domain has: a
// typo there silently disables the replacement.
func (p *parser) checkReplaces(d *Domain) {
	names := map[string]bool{}
	var all []*Limit
	var walk func(l *level)
	walk = func(l *level) {
		for _, n := range l.nodes {
			for _, lim := range n.limits {
				if lim.Name != "" {
					names[lim.Name] = true
				}
				all = append(all, lim)
			}
			walk(&n.children)
		}
	}
	walk(&d.root)
	for _, l := range all {
		for _, r := range l.Replaces {
			if !names[r] && r != l.Name {
				p.problemf(l.Line, "replaces %q, but no limit of domain %q has that name", r, d.Name)
			}
		}
	}
}

// metadata reads a descriptor's metadata into values structpb.NewStruct
// accepts (string, float64, int64, bool, nil, []any, map[string]any), as
// envoyproxy/ratelimit returns it in the response's dynamic metadata.
func (p *parser) metadata(kv pair) map[string]any {
	if isNull(kv.val) {
		return nil
	}
	v, ok := p.anyValue(kv.val, "metadata", 0)
	if !ok {
		return nil
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		p.problemf(kv.line, "metadata must be a mapping")
		return nil
	}
	return m
}

func (p *parser) anyValue(n *yaml.Node, what string, depth int) (any, bool) {
	if depth > MaxDescriptorDepth {
		p.problemf(n.Line, "%s nested deeper than %d levels", what, MaxDescriptorDepth)
		return nil, false
	}
	line := n.Line
	if deref(n).Kind == yaml.MappingNode {
		pairs, ok := p.mapping(n, what, depth)
		if !ok {
			return nil, false
		}
		m := make(map[string]any, len(pairs))
		for _, kv := range pairs {
			v, ok := p.anyValue(kv.val, what, depth+1)
			if !ok {
				return nil, false
			}
			m[kv.name] = v
		}
		return m, true
	}
	r := p.resolve(n)
	if r == nil {
		return nil, false
	}
	switch r.Kind {
	case yaml.SequenceNode:
		s := make([]any, 0, len(r.Content))
		for _, c := range r.Content {
			v, ok := p.anyValue(c, what, depth+1)
			if !ok {
				return nil, false
			}
			s = append(s, v)
		}
		return s, true
	case yaml.ScalarNode:
		switch r.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			if b, err := strconv.ParseBool(r.Value); err == nil {
				return b, true
			}
		case "!!int":
			var i int64
			if err := r.Decode(&i); err == nil {
				return i, true
			}
		case "!!float":
			var f float64
			if err := r.Decode(&f); err == nil {
				if math.IsInf(f, 0) || math.IsNaN(f) {
					p.problemf(line, "%s numbers must be finite, not %s", what, r.Value)
					return nil, false
				}
				return f, true
			}
		}
		return r.Value, true
	}
	p.problemf(line, "%s holds an unsupported YAML node", what)
	return nil, false
}
