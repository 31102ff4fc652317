package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/internal/yamlerr"
)

// Problem is one thing wrong with a config: the file and line it is at
// (Line 0 when no line applies, File "" when it came from a flag or the
// environment) and what is wrong.
type Problem struct {
	File string
	Line int
	Msg  string
}

// String formats p as "file:line: message", "file: message" or "message".
func (p Problem) String() string {
	switch {
	case p.File == "":
		return p.Msg
	case p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
	default:
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
}

// Error lists every problem found in one reading of a config, in line order.
type Error struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// maxProblems bounds the problems one reading reports.
const maxProblems = 100

// maxWork bounds the YAML nodes aliases may add to one reading (each use of
// an alias counts its nodes again), beyond twice the file's own nodes, so a
// small file of nested aliases cannot run long while a large file without
// aliases is read whole.
const maxWork = 1 << 20

// source is what a config was read from, kept so that Validate can place its
// problems on the lines that set the values.
type source struct {
	file  string
	lines map[string]int // dotted path ("cache.routes[1].max_ttl") -> line
}

// decoder reads one YAML document into a Config strictly, collecting every
// problem instead of stopping at the first: unknown fields (named with the
// fields valid there), values of the wrong type, duplicate keys, a second
// document.
type decoder struct {
	src      *source
	problems []Problem
	work     int  // nodes visited, aliases counted at each use
	budget   int  // the most work allowed: see maxWork
	over     bool // work went past budget (reported)
}

func (d *decoder) add(line int, format string, args ...any) {
	switch {
	case len(d.problems) < maxProblems-1:
		d.problems = append(d.problems, Problem{File: d.src.file, Line: line, Msg: fmt.Sprintf(format, args...)})
	case len(d.problems) == maxProblems-1:
		d.problems = append(d.problems, Problem{File: d.src.file, Msg: fmt.Sprintf("too many problems; stopped after %d", maxProblems-1)})
	}
}

func (d *decoder) full() bool { return len(d.problems) >= maxProblems }

// sortProblems orders problems by line, keeping the order of discovery
// within a line and a final "too many problems" note last.
func sortProblems(ps []Problem) {
	end := len(ps)
	if end > 0 && strings.HasPrefix(ps[end-1].Msg, "too many problems") {
		end--
	}
	slices.SortStableFunc(ps[:end], func(a, b Problem) int { return a.Line - b.Line })
}

// parse decodes data (named name in problems) into c. It returns the source
// index and the problems found, sorted by line.
func parse(name string, data []byte, c *Config) (*source, []Problem) {
	d := &decoder{src: &source{file: name, lines: map[string]int{}}}
	if line := yamlerr.InvalidUTF8Line(data); line > 0 {
		d.add(line, "the file is not valid UTF-8")
		return d.src, d.problems
	}
	doc, err := yamlerr.Document(data)
	if err != nil {
		line, msg := yamlerr.Syntax(data, err)
		d.add(line, "invalid YAML: %s", yamlerr.Hint(msg))
		return d.src, d.problems
	}
	if doc != nil && !isNull(doc) {
		d.budget = 2*treeSize(doc) + maxWork
		d.value(doc, reflect.ValueOf(c).Elem(), "")
	}
	sortProblems(d.problems)
	return d.src, d.problems
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textType        = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// overBudget reports, once, that aliases made the file too much work.
func (d *decoder) overBudget(line int) {
	if d.work > d.budget && !d.over {
		d.over = true
		d.add(line, "aliases expand the file by more than %d YAML nodes", maxWork)
	}
}

// treeSize counts the nodes of a document without following aliases.
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

// resolve follows aliases, counting the work.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	d.work++
	return n
}

// value decodes n into v, whose dotted path is path ("" at the top).
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if d.full() {
		return
	}
	if d.work > d.budget {
		d.overBudget(n.Line)
		return
	}
	line := n.Line
	n = d.resolve(n)
	if path != "" {
		if _, seen := d.src.lines[path]; !seen {
			d.src.lines[path] = line
		}
	}
	t := v.Type()
	if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textType) {
		d.scalar(n, v, path, line)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return
		}
		p := reflect.New(t.Elem())
		d.value(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		d.mapping(n, v, path, line)
	case reflect.Slice:
		if isNull(n) {
			v.SetZero()
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.add(line, "%s: want a list, not %s", where(path), describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if d.full() || d.work > d.budget {
				d.overBudget(item.Line)
				break
			}
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		if isNull(n) {
			v.SetZero()
			return
		}
		if n.Kind != yaml.MappingNode {
			d.add(line, "%s: want a mapping, not %s", where(path), describe(n))
			return
		}
		m := reflect.MakeMapWithSize(t, len(n.Content)/2)
		first := map[string]int{}
		for _, kv := range d.pairs(n, path) {
			if d.full() || d.work > d.budget {
				d.overBudget(kv.key.Line)
				break
			}
			k := reflect.New(t.Key()).Elem()
			d.scalar(kv.key, k, path+" key", kv.key.Line)
			ks := fmt.Sprint(k.Interface())
			if prev, dup := first[ks]; dup {
				d.add(kv.key.Line, "%s: key %q given twice (first at line %d)", path, clip(ks), prev)
				continue
			}
			first[ks] = kv.key.Line
			e := reflect.New(t.Elem()).Elem()
			d.value(kv.val, e, path+"."+ks)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	default:
		d.scalar(n, v, path, line)
	}
}

// pair is one key and value of a mapping.
type pair struct{ key, val *yaml.Node }

// pairs lists a mapping's pairs with its merge keys ("<<: *base") expanded:
// the mapping's own keys first, then those of each merged mapping that the
// mapping does not set itself.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	var own, merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merged = append(merged, d.merge(v, path, 0)...)
			continue
		}
		own = append(own, pair{k, v})
	}
	if len(merged) == 0 {
		return own
	}
	set := map[string]bool{}
	for _, p := range own {
		set[p.key.Value] = true
	}
	for _, p := range merged {
		if !set[p.key.Value] {
			set[p.key.Value] = true
			own = append(own, p)
		}
	}
	return own
}

// merge returns the pairs a merge key's value brings: a mapping, or a list
// of mappings (earlier ones win).
func (d *decoder) merge(v *yaml.Node, path string, depth int) []pair {
	line := v.Line
	v = d.resolve(v)
	if depth > 32 || d.work > d.budget {
		d.add(line, "%s: merge keys nested too deep", strings.TrimPrefix(path, "."))
		return nil
	}
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(v, path)
	case yaml.SequenceNode:
		var out []pair
		for _, item := range v.Content {
			out = append(out, d.merge(item, path, depth+1)...)
		}
		return out
	}
	d.add(line, "%s: a merge key (<<) takes a mapping or a list of mappings, not %s", where(path), describe(v))
	return nil
}

// mapping decodes a mapping node into the struct v.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string, line int) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.add(line, "%s must be a mapping, not %s", where(path), describe(n))
		return
	}
	fields := structFields(v.Type())
	first := map[string]int{}
	for _, kv := range d.pairs(n, path) {
		if d.full() || d.work > d.budget {
			d.overBudget(kv.key.Line)
			return
		}
		k := d.resolve(kv.key)
		if k.Kind != yaml.ScalarNode {
			d.add(kv.key.Line, "%s has a key that is %s; keys are names", where(path), describe(k))
			continue
		}
		name := k.Value
		if prev, dup := first[name]; dup {
			d.add(kv.key.Line, "%s: key %q given twice (first at line %d)", where(path), clip(name), prev)
			continue
		}
		first[name] = kv.key.Line
		f, ok := fields.byName[name]
		if !ok {
			d.add(kv.key.Line, "unknown field %q in %s (valid: %s)", clip(name), where(path), strings.Join(fields.names, ", "))
			continue
		}
		child := name
		if path != "" {
			child = path + "." + name
		}
		d.src.lines[child] = kv.key.Line
		d.value(kv.val, v.FieldByIndex(f), child)
	}
}

// fieldSet is what a struct accepts: its yaml names, inline structs flattened.
type fieldSet struct {
	byName map[string][]int // yaml name -> field index path
	names  []string         // in declaration order
}

func structFields(t reflect.Type) fieldSet {
	fs := fieldSet{byName: map[string][]int{}}
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			idx := append(slices.Clone(index), i)
			if name == "-" {
				continue
			}
			if opts == "inline" && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if _, dup := fs.byName[name]; !dup {
				fs.names = append(fs.names, name)
			}
			fs.byName[name] = idx
		}
	}
	walk(t, nil)
	return fs
}

// scalar decodes a scalar node with yaml.v3's own rules (durations, YAML 1.1
// booleans, number forms), turning its error into a message that names the
// field and the kind of value it wants.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string, line int) {
	n = d.resolve(n)
	if n.Kind != yaml.ScalarNode {
		d.add(line, "%s: want %s, not %s", where(path), want(v.Type()), describe(n))
		return
	}
	if v.Type() == durationType && n.Tag == "!!int" {
		// A duration needs its unit, except zero.
		if n.Value == "0" {
			v.SetZero()
			return
		}
		d.add(line, "%s: want %s (with a unit), not %s", where(path), want(v.Type()), describe(n))
		return
	}
	p := reflect.New(v.Type())
	if err := n.Decode(p.Interface()); err != nil {
		d.add(line, "%s: want %s, not %s", where(path), want(v.Type()), describe(n))
		return
	}
	v.Set(p.Elem())
}

// want names the kind of value a field of type t takes.
func want(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 250ms or 1.5s"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number from 0"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return "a " + t.String()
}

// describe says what a node holds, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "empty"
		}
		return strconv.Quote(clip(n.Value))
	}
	return "an unsupported YAML node"
}

// where names a path for messages: "the top level" for the root.
func where(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}

// clip shortens long input quoted in messages.
func clip(s string) string {
	if len(s) <= 80 {
		return s
	}
	cut := 77
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
