package yamlerr

import (
	"errors"
	"testing"
)

func TestDocument(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantNil  bool
		wantErr  error
		wantAnyE bool
		wantKey  string
	}{
		{name: "empty", yaml: "", wantNil: true},
		{name: "comment only", yaml: "# nothing\n", wantNil: true},
		{name: "one mapping", yaml: "a: 1\n", wantKey: "a"},
		{name: "explicit start", yaml: "---\na: 1\n", wantKey: "a"},
		{name: "trailing empty documents", yaml: "a: 1\n---\n---\n", wantKey: "a"},
		{name: "trailing null document", yaml: "a: 1\n---\n~\n", wantKey: "a"},
		{name: "second document", yaml: "a: 1\n---\nb: 2\n", wantErr: ErrMultipleDocuments},
		{name: "syntax error", yaml: "a: [1\n", wantAnyE: true},
		{name: "syntax error in a second document", yaml: "a: 1\n---\nb: [\n", wantAnyE: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := Document([]byte(tt.yaml))
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			case tt.wantAnyE:
				if err == nil {
					t.Fatalf("no error for %q", tt.yaml)
				}
				return
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantNil {
				if root != nil {
					t.Fatalf("root = %v, want nil", root)
				}
				return
			}
			if root == nil || len(root.Content) < 1 || root.Content[0].Value != tt.wantKey {
				t.Fatalf("root = %+v, want a mapping with key %q", root, tt.wantKey)
			}
		})
	}
}

func TestInvalidUTF8Line(t *testing.T) {
	tests := []struct {
		name string
		data string
		want int
	}{
		{"valid", "a: é\nb: 2\n", 0},
		{"first line", "a: \xff\n", 1},
		{"third line", "a: 1\nb: 2\nc: \xc3\x28\n", 3},
		{"truncated sequence at the end", "a: 1\n\xe2\x82", 2},
		{"UTF-16 little-endian BOM", "\xff\xfea\x00:\x00", 0},
		{"UTF-16 big-endian BOM", "\xfe\xff\x00a\x00:", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := InvalidUTF8Line([]byte(tt.data)); got != tt.want {
				t.Errorf("InvalidUTF8Line(%q) = %d, want %d", tt.data, got, tt.want)
			}
		})
	}
}
