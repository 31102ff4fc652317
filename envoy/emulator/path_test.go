package emulator

import (
	"strings"
	"testing"
)

// TestCanonicalPath checks the behaviour Envoy's own path tests pin down
// (test/common/http/path_utility_test.go: NormalizeValidPaths,
// NormalizeCasePath, InvalidPaths, StripDotSegmentWithParameters) and the
// spellings of the batch path a client may try.
func TestCanonicalPath(t *testing.T) {
	tests := []struct {
		name, in, want string
		invalid        bool
	}{
		{name: "already normal", in: "/x/y/z", want: "/x/y/z"},
		{name: "parent", in: "/a/b/../c", want: "/a/c"},
		{name: "current", in: "/a/b/./c", want: "/a/b/c"},
		{name: "no leading slash", in: "a/b/../c", want: "/a/c"},
		{name: "above the root", in: "/a/b/../../../../c", want: "/c"},
		{name: "backslash is a separator", in: "/a/..\\c", want: "/c"},
		{name: "reserved escapes kept", in: "/%5c%25", want: "/%5c%25"},
		{name: "non-ASCII escapes kept", in: "/%c0%af", want: "/%c0%af"},
		{name: "escaped dots", in: "/a/b/%2E%2E/c", want: "/a/c"},
		{name: "escaped dots lower case", in: "/a/b/%2e%2e/c", want: "/a/c"},
		{name: "mixed dot", in: "/a/b/%2E./c", want: "/a/c"},
		{name: "escaped single dot", in: "/a/b/%2E/c", want: "/a/b/c"},
		{name: "bare dotdot", in: "..", want: "/"},
		{name: "leading dotdot", in: "/../a/b", want: "/a/b"},
		{name: "escaped slash kept", in: "/a/%2F%2f/c", want: "/a/%2F%2f/c"},
		{name: "case kept", in: "/A/B/C", want: "/A/B/C"},
		{name: "unreserved decoded", in: "/api/v1/%62atch", want: "/api/v1/batch"},
		{name: "unreserved decoded, tilde and dash", in: "/%7Eu%2Dx%5F", want: "/~u-x_"},
		{name: "dot inside a segment decoded", in: "/a%2Eb", want: "/a.b"},
		{name: "space escaped", in: "/a b", want: "/a%20b"},
		{name: "invalid escape kept", in: "/a%zz", want: "/a%zz"},
		{name: "lone percent", in: "/a%", want: "/a%"},
		{name: "query untouched", in: "/a/./b?x=/../y&z=%2e", want: "/a/b?x=/../y&z=%2e"},
		{name: "dotdot with parameters", in: "/xyz/..;foo=bar/abc", want: "/abc"},
		{name: "dot with parameters at the end", in: "/xyz/.;foo=bar", want: "/xyz/"},
		{name: "parameters elsewhere kept", in: "/xyz/..;foo=bar/.;fff=zzz/remain;blah-bluh?query", want: "/remain;blah-bluh?query"},
		{name: "trailing slash kept", in: "/api/v1/batch/", want: "/api/v1/batch/"},
		{name: "escaped NUL", in: "/xyz/.%00../abc", invalid: true},
		{name: "escaped NUL between dots", in: "/xyz/%00.%00./abc", invalid: true},
		{name: "double percent then NUL", in: "/xyz/AAAAA%%0000/abc", invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := canonicalPath(tt.in)
			if ok == tt.invalid {
				t.Fatalf("canonicalPath(%q) ok = %v; want %v", tt.in, ok, !tt.invalid)
			}
			if !tt.invalid && got != tt.want {
				t.Errorf("canonicalPath(%q) = %q; want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMergeSlashes(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a//b/c", "a/b/c"},
		{"/a//b/c/", "/a/b/c/"},
		{"/a", "/a"},
		{"//a/b/c", "/a/b/c"},
		{"/a/b/c//", "/a/b/c/"},
		{"/a////b/c", "/a/b/c"},
		{"/a//b?a=///c", "/a/b?a=///c"},
		{"/a//b?", "/a/b?"},
		{"//a/?b", "/a/?b"},
		{"//api/v1/batch", "/api/v1/batch"},
	}
	for _, tt := range tests {
		if got := mergeSlashes(tt.in); got != tt.want {
			t.Errorf("mergeSlashes(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzCanonicalPath feeds the connection manager's path normalisation (a
// client's request-target) arbitrary paths: it never panics, and a path it
// accepts comes out absolute, with no dot segment, no byte a request line
// cannot carry, and the query as it was; merge_slashes then leaves no
// empty segment.
//
// Seeds: testdata/fuzz/FuzzCanonicalPath, plus the values below.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{
		"/a/b/../c", "a/b", "/a/..\\c", "/%2e%2E/x", "/%2e;x/", "/..;p/x?q=/../", "/%00", "/a%zz%", "//api//v1/batch/",
		"/API/V1/BATCH", "/api/v1/%62atch", "/\x7f\xff", "/%%2e%2e/", "/./../.%2e/%2e./",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, ok := canonicalPath(in)
		if !ok {
			return
		}
		path, query, _ := strings.Cut(out, "?")
		if _, q, hasQuery := strings.Cut(in, "?"); hasQuery && q != query {
			t.Fatalf("canonicalPath(%q) = %q: query changed", in, out)
		}
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("canonicalPath(%q) = %q: not absolute", in, out)
		}
		for _, seg := range strings.Split(path, "/")[1:] {
			if seg == "." || seg == ".." {
				t.Fatalf("canonicalPath(%q) = %q: dot segment left", in, out)
			}
		}
		for i := 0; i < len(path); i++ {
			if c := path[i]; c <= ' ' || c >= 0x7f || c == '\\' {
				t.Fatalf("canonicalPath(%q) = %q: byte %#x left unescaped", in, out, c)
			}
		}
		merged, _, _ := strings.Cut(mergeSlashes(out), "?")
		if strings.Contains(merged, "//") && merged != "//" {
			t.Fatalf("mergeSlashes(%q) = %q", out, merged)
		}
	})
}
