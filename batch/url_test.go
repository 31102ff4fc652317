package batch

import (
	"errors"
	"flag"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/fuzz seed files from the Go tables")

// ssrfCorpus are url bypass attempts the validator must refuse, with the
// reason. It is also the seed corpus of FuzzValidateURL, kept as files in
// testdata/fuzz/FuzzValidateURL (go test -run TestSSRFCorpusFiles -update).
var ssrfCorpus = []struct {
	name string
	url  string
	want error
}{
	{"empty", "", errURLEmpty},
	{"absolute http", "http://127.0.0.1:9999/api/x", errURLNotPath},
	{"absolute https", "https://evil.example/api/x", errURLNotPath},
	{"scheme only", "javascript:alert(1)", errURLNotPath},
	{"file scheme", "file:///etc/passwd", errURLNotPath},
	{"gopher", "gopher://127.0.0.1:6379/_FLUSHALL", errURLNotPath},
	{"relative no slash", "api/x", errURLNotPath},
	{"protocol relative", "//evil.example/api/x", errURLNotPath},
	{"triple slash", "///evil.example/api/x", errURLNotPath},
	{"backslash prefix", `\\evil.example\api`, errURLBackslash},
	{"slash backslash", `/\evil.example/api/x`, errURLBackslash},
	{"backslash inside", `/api/..\..\admin`, errURLBackslash},
	{"userinfo absolute", "http://user:pass@evil.example/api/", errURLNotPath},
	{"userinfo-like path", "/api/x@evil.example", nil}, // harmless: no authority in origin-form; accepted
	{"dotdot", "/api/../admin", errURLSegment},
	{"dot", "/api/./x", errURLSegment},
	{"trailing dotdot", "/api/x/..", errURLSegment},
	{"encoded dot lower", "/api/%2e%2e/admin", errURLEscape},
	{"encoded dot upper", "/api/%2E%2E/admin", errURLEscape},
	{"half encoded dot", "/api/.%2e/admin", errURLEscape},
	{"encoded slash", "/api%2f..%2fadmin", errURLEscape},
	{"encoded slash upper", "/api/x%2Fy", errURLEscape},
	{"encoded backslash", "/api/..%5c..%5cadmin", errURLEscape},
	{"double encoded dot", "/api/%252e%252e/admin", errURLEscape},
	{"double encoded slash", "/api/%252f", errURLEscape},
	{"double encoded backslash", "/api/%255c", errURLEscape},
	{"overlong utf8 dot", "/api/%c0%ae%c0%ae/admin", errURLEscape},
	{"overlong utf8 slash", "/api/%c0%af", errURLEscape},
	{"fullwidth dot encoded", "/api/%ef%bc%8e%ef%bc%8e/admin", errURLEscape},
	{"raw non-ascii", "/api/\uff0e\uff0e/admin", errURLControl},
	{"raw latin1", "/api/caf\xe9", errURLControl},
	{"nul raw", "/api/x\x00y", errURLControl},
	{"nul encoded", "/api/x%00", errURLEscape},
	{"cr raw", "/api/x\r\nHost: evil", errURLControl},
	{"crlf encoded path", "/api/x%0d%0aHost:%20evil", errURLEscape},
	{"crlf encoded query", "/api/x?a=%0d%0aSet-Cookie:x", errURLControl},
	{"lf encoded query", "/api/x?a=%0A", errURLControl},
	{"double encoded crlf query", "/api/x?a=%250d%250a", errURLDoubleEnc},
	{"tab", "/api/x\ty", errURLControl},
	{"space", "/api/x y", errURLByte},
	{"del", "/api/x\x7f", errURLControl},
	{"fragment", "/api/x#frag", errURLFragment},
	{"semicolon dotdot", "/api/..;/admin", errURLSemicolon},
	{"semicolon param", "/api/x;jsessionid=1", errURLSemicolon},
	{"encoded semicolon", "/api/x%3b/../admin", errURLEscape},
	{"bad escape", "/api/%zz", errURLEscape},
	{"truncated escape", "/api/x%4", errURLEscape},
	{"lone percent", "/api/100%", errURLEscape},
	{"empty segment", "/api//x", errURLSegment},
	{"empty segment merge_slashes", "/api/x//../../admin", errURLSegment},
	{"outside prefix", "/admin", errURLPrefix},
	{"prefix without slash", "/api", errURLPrefix},
	{"prefix only", "/api/", errURLPrefix},
	{"prefix lookalike", "/apix/y", errURLPrefix},
	{"uppercase prefix", "/API/x", errURLPrefix},
	{"nested batch", "/api/v1/batch", errURLNested},
	{"nested batch slash", "/api/v1/batch/", errURLNested},
	{"nested batch case", "/api/V1/Batch", errURLNested},
	{"nested batch query", "/api/v1/batch?x=1", errURLNested},
	{"ip literal authority", "//169.254.169.254/latest/meta-data", errURLNotPath},
	{"ipv6 literal authority", "//[::1]:8080/api/x", errURLNotPath},
	{"decimal ip authority", "//2130706433/api/x", errURLNotPath},
	{"ip in path escape", "/api/%40169.254.169.254", nil}, // "@" decoded in a path segment is just data; accepted
	{"bracket", "/api/[::1]", errURLByte},
	{"angle", "/api/<script>", errURLByte},
	{"quote", `/api/"x"`, errURLByte},
	{"curly", "/api/{x}", errURLByte},
	{"pipe", "/api/a|b", errURLByte},
	{"caret", "/api/a^b", errURLByte},
	{"backtick", "/api/a`b", errURLByte},
	{"empty query", "/api/x?", errURLQueryEmpty},
	{"query backslash", `/api/x?u=\\evil`, errURLBackslash},
	{"too long", "/api/" + strings.Repeat("a", 2048), errURLTooLong},
}

// acceptedURLs are legitimate urls the validator must pass unchanged.
var acceptedURLs = []string{
	"/api/v1/users",
	"/api/v1/users/42",
	"/api/v1/users/42/",
	"/api/v1/users?filter=a%2Fb&x=%C3%A9",
	"/api/v1/search?q=a+b&limit=10;offset=2",
	"/api/v1/files/name%20with%20space",
	"/api/v1/items/a.b.c",
	"/api/v1/items/..x",
	"/api/v1/items/x..",
	"/api/v1/batches", // not the batch path
	"/api/v1/users:search",
	"/api/v1/x?redirect=http://evil.example/", // data for the app; the client follows no redirect
}

func testValidator() *urlValidator { return newURLValidator(Config{}.WithDefaults()) }

func TestValidateURL(t *testing.T) {
	v := testValidator()
	for _, tc := range ssrfCorpus {
		t.Run(tc.name, func(t *testing.T) {
			p, q, err := v.Validate(tc.url)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate(%q) = %v, want accepted", tc.url, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate(%q) = (%q, %q, %v), want %v", tc.url, p, q, err, tc.want)
			}
			var ue *URLError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *URLError", err)
			}
		})
	}
	for _, u := range acceptedURLs {
		t.Run("accept "+u, func(t *testing.T) {
			p, q, err := v.Validate(u)
			if err != nil {
				t.Fatalf("Validate(%q) = %v", u, err)
			}
			got := p
			if q != "" {
				got += "?" + q
			}
			if got != u {
				t.Fatalf("Validate(%q) changed it to %q", u, got)
			}
		})
	}
}

func TestValidateURLLength(t *testing.T) {
	cfg := Config{MaxURLLength: 32}.WithDefaults()
	v := newURLValidator(cfg)
	ok := "/api/" + strings.Repeat("a", 27) // 32 bytes
	if _, _, err := v.Validate(ok); err != nil {
		t.Fatalf("32-byte url: %v", err)
	}
	if _, _, err := v.Validate(ok + "a"); !errors.Is(err, errURLTooLong) {
		t.Fatalf("33-byte url: %v, want too long", err)
	}
}

// TestSSRFCorpusFiles keeps testdata/fuzz/FuzzValidateURL in step with
// ssrfCorpus: one seed file per case. -update rewrites them.
func TestSSRFCorpusFiles(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzValidateURL")
	for _, tc := range ssrfCorpus {
		name := "ssrf_" + strings.NewReplacer(" ", "_", "-", "_").Replace(tc.name)
		file := filepath.Join(dir, name)
		want := "go test fuzz v1\nstring(" + strconv.Quote(tc.url) + ")\n"
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != want {
			t.Errorf("%s out of date (run go test ./batch -run TestSSRFCorpusFiles -update): %v", file, err)
		}
	}
}

// FuzzValidateURL checks the validator's invariants on arbitrary input: an
// accepted url is ASCII origin-form under a prefix, and decoding it once
// (as the application would) yields a path with no dot or empty segment,
// backslash or control byte: nothing a later normalisation could move out
// of the prefix.
func FuzzValidateURL(f *testing.F) {
	for _, tc := range ssrfCorpus {
		f.Add(tc.url)
	}
	for _, u := range acceptedURLs {
		f.Add(u)
	}
	v := testValidator()
	f.Fuzz(func(t *testing.T, raw string) {
		p, q, err := v.Validate(raw)
		if err != nil {
			if p != "" || q != "" {
				t.Fatalf("rejected %q but returned %q %q", raw, p, q)
			}
			return
		}
		full := p
		if q != "" {
			full += "?" + q
		}
		if full != raw {
			t.Fatalf("accepted %q changed to %q", raw, full)
		}
		if !strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "//") {
			t.Fatalf("accepted %q outside the prefix", raw)
		}
		dec, err := url.PathUnescape(p)
		if err != nil {
			t.Fatalf("accepted %q does not unescape: %v", raw, err)
		}
		if strings.ContainsAny(dec, "\\;%") || strings.Contains(dec, "//") {
			t.Fatalf("accepted %q decodes to %q", raw, dec)
		}
		for i := 0; i < len(dec); i++ {
			if dec[i] < 0x20 || dec[i] >= 0x7f {
				t.Fatalf("accepted %q decodes to control/non-ASCII %q", raw, dec)
			}
		}
		clean := path.Clean(dec)
		if strings.HasSuffix(dec, "/") {
			clean += "/"
		}
		if clean != dec || !strings.HasPrefix(clean, "/api/") {
			t.Fatalf("accepted %q decodes to %q, which normalises to %q", raw, dec, clean)
		}
		if strings.EqualFold(strings.TrimSuffix(dec, "/"), "/api/v1/batch") {
			t.Fatalf("accepted the batch path %q", raw)
		}
		u, err := url.ParseRequestURI(raw)
		if err != nil || u.Host != "" || u.Scheme != "" || u.User != nil {
			t.Fatalf("accepted %q parses as %+v, %v", raw, u, err)
		}
	})
}
