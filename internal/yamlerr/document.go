package yamlerr

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// ErrMultipleDocuments is Document's error for a second YAML document with
// content, which a reader of the first would silently ignore.
var ErrMultipleDocuments = errors.New("yaml: more than one YAML document in the file; it must hold one")

// Document parses the single YAML document of data and returns its root
// node, or nil when data holds no document. Trailing empty documents (a file
// ending in "---", as templating tools write them) are accepted; a second
// document with content is ErrMultipleDocuments. A panic of the parser on
// hostile input becomes an error.
func Document(data []byte) (root *yaml.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var n yaml.Node
	if err := dec.Decode(&n); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	for {
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if !emptyDocument(&extra) {
			return nil, ErrMultipleDocuments
		}
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil
		}
		return n.Content[0], nil
	}
	return &n, nil
}

// emptyDocument reports whether n is a document with no content or a null.
func emptyDocument(n *yaml.Node) bool {
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		n = n.Content[0]
	}
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// InvalidUTF8Line returns the 1-based line of the first invalid UTF-8
// sequence in data, or 0 when data is valid UTF-8 or starts with a UTF-16
// byte order mark (the YAML parser decodes UTF-16 itself).
func InvalidUTF8Line(data []byte) int {
	if utf8.Valid(data) || bytes.HasPrefix(data, []byte{0xFF, 0xFE}) || bytes.HasPrefix(data, []byte{0xFE, 0xFF}) {
		return 0
	}
	line := 1
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		data = data[size:]
	}
	return line
}
