package header

import (
	"slices"
	"strings"
	"testing"
)

func list(kv ...string) List {
	var l List
	for i := 0; i+1 < len(kv); i += 2 {
		l = append(l, Field{kv[i], kv[i+1]})
	}
	return l
}

func TestRead(t *testing.T) {
	l := list(":status", "200", "vary", "accept", "x-a", "", "vary", "origin")
	tests := []struct {
		name    string
		field   string
		wantGet string
		wantOK  bool
		wantAll []string
	}{
		{name: "first of repeated", field: "vary", wantGet: "accept", wantOK: true, wantAll: []string{"accept", "origin"}},
		{name: "pseudo-header", field: ":status", wantGet: "200", wantOK: true, wantAll: []string{"200"}},
		{name: "present and empty", field: "x-a", wantGet: "", wantOK: true, wantAll: []string{""}},
		{name: "absent", field: "etag", wantOK: false},
		{name: "names are compared exactly", field: "Vary", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := l.Get(tt.field); got != tt.wantGet {
				t.Errorf("Get = %q, want %q", got, tt.wantGet)
			}
			if got, ok := l.Lookup(tt.field); got != tt.wantGet || ok != tt.wantOK {
				t.Errorf("Lookup = %q, %v, want %q, %v", got, ok, tt.wantGet, tt.wantOK)
			}
			if got := l.Has(tt.field); got != tt.wantOK {
				t.Errorf("Has = %v, want %v", got, tt.wantOK)
			}
			if got := l.Values(tt.field); !slices.Equal(got, tt.wantAll) || (got == nil) != (tt.wantAll == nil) {
				t.Errorf("Values = %q, want %q", got, tt.wantAll)
			}
		})
	}
}

func TestChange(t *testing.T) {
	tests := []struct {
		name   string
		start  List
		change func(*List)
		want   List
	}{
		{
			name:   "add appends a regular field",
			start:  list(":path", "/", "a", "1"),
			change: func(l *List) { l.Add("B", "2") },
			want:   list(":path", "/", "a", "1", "b", "2"),
		},
		{
			name:   "add keeps pseudo-headers first",
			start:  list(":method", "GET", "a", "1"),
			change: func(l *List) { l.Add(":path", "/x") },
			want:   list(":method", "GET", ":path", "/x", "a", "1"),
		},
		{
			name:   "add to the zero value",
			change: func(l *List) { l.Add(":status", "200") },
			want:   list(":status", "200"),
		},
		{
			name:   "set replaces every line in the first one's place",
			start:  list("a", "1", "b", "2", "a", "3"),
			change: func(l *List) { l.Set("A", "9") },
			want:   list("a", "9", "b", "2"),
		},
		{
			name:   "set of an absent name adds it",
			start:  list("a", "1"),
			change: func(l *List) { l.Set("b", "2") },
			want:   list("a", "1", "b", "2"),
		},
		{
			name:   "del removes every line and keeps the order",
			start:  list("a", "1", "b", "2", "a", "3", "c", "4"),
			change: func(l *List) { l.Del("A") },
			want:   list("b", "2", "c", "4"),
		},
		{
			name:   "del of an absent name changes nothing",
			start:  list("a", "1"),
			change: func(l *List) { l.Del("b") },
			want:   list("a", "1"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.start.Clone()
			tt.change(&l)
			if !slices.Equal(l, tt.want) {
				t.Errorf("got %q, want %q", l, tt.want)
			}
		})
	}
}

func TestCloneAndByteSize(t *testing.T) {
	tests := []struct {
		name     string
		l        List
		wantSize int
	}{
		{name: "nil", l: nil, wantSize: 0},
		{name: "fields", l: list(":status", "200", "etag", `"v1"`), wantSize: len(":status200etag") + 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.l.Clone()
			if !slices.Equal(c, tt.l) || (c == nil) != (tt.l == nil) {
				t.Fatalf("Clone = %q, want %q", c, tt.l)
			}
			if len(c) > 0 {
				c[0].Value = "changed"
				if tt.l[0].Value == "changed" {
					t.Error("Clone shares its backing array")
				}
			}
			if got := tt.l.ByteSize(); got != tt.wantSize {
				t.Errorf("ByteSize = %d, want %d", got, tt.wantSize)
			}
		})
	}
}

func TestIsToken(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{name: "field name", in: "accept-encoding", want: true},
		{name: "every tchar symbol", in: "!#$%&'*+-.^_`|~", want: true},
		{name: "empty", in: ""},
		{name: "space", in: "a b"},
		{name: "separator", in: "a,b"},
		{name: "pseudo-header colon", in: ":path"},
		{name: "non-ASCII", in: "caf\xc3\xa9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsToken(tt.in); got != tt.want {
				t.Errorf("IsToken(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{name: "RFC 9110 §5.6.1 members trimmed", in: " gzip ,\tbr", want: []string{"gzip", "br"}},
		{name: "RFC 9110 §5.6.1 empty members dropped", in: ",, a ,,b,", want: []string{"a", "b"}},
		{name: "comma inside a quoted-string", in: `private="a, b", max-age=1`, want: []string{`private="a, b"`, "max-age=1"}},
		{name: "quoted-pair escapes a quote", in: `x="a\", b", y`, want: []string{`x="a\", b"`, "y"}},
		{name: "unterminated quoted-string runs to the end", in: `x="a, b`, want: []string{`x="a, b`}},
		{name: "empty", in: "", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SplitList(tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("SplitList(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzSplitList: members are never empty nor padded with OWS, each is a
// substring of the input, and a value without quotes splits exactly like
// strings.Split followed by trimming and dropping empty members.
func FuzzSplitList(f *testing.F) {
	for _, s := range []string{"gzip, br", `private="a, b", max-age=1`, `x="a\", b", y`, `"`, `\`, ",,,", " \t "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := SplitList(v)
		for _, m := range got {
			if m == "" || strings.Trim(m, " \t") != m || !strings.Contains(v, m) {
				t.Fatalf("SplitList(%q): bad member %q", v, m)
			}
		}
		if strings.ContainsRune(v, '"') {
			return
		}
		var want []string
		for _, m := range strings.Split(v, ",") {
			if m = strings.Trim(m, " \t"); m != "" {
				want = append(want, m)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("SplitList(%q) = %q, want %q", v, got, want)
		}
	})
}
