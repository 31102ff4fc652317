// Package yamlerr reads one untrusted YAML document the way Sluice's config
// and rule loaders need it (Document, InvalidUTF8Line) and places a YAML
// syntax error on the line that holds it (Syntax).
//
// go.yaml.in/yaml/v3 reports a syntax error with the line of the context the
// parser was in, often the start of an enclosing mapping, rather than the line
// it could not read: a line indented one space too little, three lines into a
// mapping, comes back as "yaml: line 1: did not find expected key". The parser
// reads its input in order, so the first prefix of whole lines that fails with
// the same message ends on the line at fault; Syntax finds it by bisection.
package yamlerr

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// reported matches yaml.v3's syntax errors: "yaml: line 3: did not find
// expected key".
var reported = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Syntax returns the line of data (1-based) that holds the syntax error err,
// which parsing data with yaml.v3 returned, and the error's message without
// its "yaml: line N:" prefix. For an error that names no line, line is 0 and
// msg is the message without "yaml: ".
func Syntax(data []byte, err error) (line int, msg string) {
	m := reported.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, strings.TrimPrefix(err.Error(), "yaml: ")
	}
	line, _ = strconv.Atoi(m[1])
	msg = m[2]
	ends := lineEnds(data)
	if !failsWith(data, msg) {
		return line, msg
	}
	// The smallest number of whole lines whose parse fails with msg; the
	// whole input fails, so hi always does.
	lo, hi := 0, len(ends)
	for lo+1 < hi {
		mid := (lo + hi) / 2
		if failsWith(data[:ends[mid-1]], msg) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, msg
}

// Hint adds advice to the messages yaml.v3 gives for a line indented wrong,
// which do not say so.
func Hint(msg string) string {
	switch msg {
	case "did not find expected key", "mapping values are not allowed in this context",
		"did not find expected '-' indicator", "could not find expected ':'":
		return msg + " (check this line's indentation against the lines above)"
	case "found character that cannot start any token":
		return msg + " (a tab? YAML indents with spaces)"
	}
	return msg
}

// lineEnds returns the offset just past each line of data (the last line may
// lack its newline).
func lineEnds(data []byte) []int {
	var ends []int
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	return ends
}

// failsWith reports whether parsing every document of data fails with msg.
func failsWith(data []byte, msg string) (fails bool) {
	defer func() {
		if recover() != nil {
			fails = false
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return false
		}
		if err != nil {
			m := reported.FindStringSubmatch(err.Error())
			return m != nil && m[2] == msg
		}
	}
}
