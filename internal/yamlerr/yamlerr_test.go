package yamlerr

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSyntax(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		wantLine int
		wantMsg  string
	}{
		{name: "key indented one space too little, third line",
			yaml: "server:\n  grpc_addr: x\n admin_addr: y\n", wantLine: 3, wantMsg: "did not find expected key"},
		{name: "the same after comments",
			yaml: "# a\n# b\nserver:\n  grpc_addr: x\n admin_addr: y\n", wantLine: 5, wantMsg: "did not find expected key"},
		{name: "list item under a mapping",
			yaml: "a:\n  b: c\n  - d\n", wantLine: 3, wantMsg: "did not find expected key"},
		{name: "mapping after a list item",
			yaml: "a:\n  - b\n  c: d\n", wantLine: 3, wantMsg: "did not find expected '-' indicator"},
		{name: "key indented too far",
			yaml: "ratelimit:\n  timeout: 20ms\nredis:\n  url: x\n   key_prefix: y\n", wantLine: 5, wantMsg: "mapping values are not allowed in this context"},
		{name: "tab", yaml: "server:\n\tgrpc_addr: x\n", wantLine: 2, wantMsg: "found character that cannot start any token"},
		{name: "unterminated quote", yaml: "a: b\nc: 'x\n", wantLine: 2, wantMsg: "found unexpected end of stream"},
		{name: "unclosed flow sequence", yaml: "n: [1\nserver: {}\n", wantLine: 1, wantMsg: "did not find expected ',' or ']'"},
		{name: "no newline at the end", yaml: "a:\n  b: c\n  - d", wantLine: 3, wantMsg: "did not find expected key"},
		{name: "error in a second document", yaml: "a: 1\n---\nb:\n  c: d\n e: f\n", wantLine: 5, wantMsg: "did not find expected key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n yaml.Node
			dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
			var err error
			for err == nil {
				err = dec.Decode(&n)
			}
			if err.Error() == "EOF" {
				t.Fatal("the YAML parses")
			}
			line, msg := Syntax([]byte(tt.yaml), err)
			if line != tt.wantLine || msg != tt.wantMsg {
				t.Errorf("Syntax = %d %q, want %d %q (yaml.v3 said %q)", line, msg, tt.wantLine, tt.wantMsg, err)
			}
		})
	}
}

func TestSyntaxWithoutLine(t *testing.T) {
	line, msg := Syntax([]byte("x"), errors.New("yaml: something else"))
	if line != 0 || msg != "something else" {
		t.Errorf("Syntax = %d %q", line, msg)
	}
}
