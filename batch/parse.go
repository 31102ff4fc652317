package batch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"unicode/utf8"
)

// Error is a batch or item failure: an HTTP status and the Graph-style
// error body {"error":{"code","message"}}. Messages never echo more than a
// short quoted piece of client input.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("batch: %d %s: %s", e.Status, e.Code, e.Message) }

// Error codes of the batch and of items.
const (
	CodeInvalidRequest    = "invalidRequest"    // malformed batch JSON or item fields
	CodeRequestTooLarge   = "requestTooLarge"   // batch body over MaxRequestBytes
	CodeTooManyItems      = "tooManyRequests"   // more than MaxItems items
	CodeInvalidID         = "invalidId"         // missing, non-string, too long id
	CodeDuplicateID       = "duplicateId"       // two items with one id
	CodeUnknownDependency = "unknownDependency" // dependsOn names no item
	CodeCyclicDependency  = "cyclicDependency"  // dependsOn forms a cycle
	CodeNestedBatch       = "nestedBatch"       // a batch inside a batch
	CodeInvalidURL        = "invalidUrl"        // item url refused (url.go)
	CodeInvalidMethod     = "invalidMethod"     // method not allowed in a batch
	CodeInvalidHeader     = "invalidHeader"     // header refused (reserved, malformed)
	CodeInvalidBody       = "invalidBody"       // body not JSON/base64 as its content-type says
	CodeFailedDependency  = "failedDependency"  // a dependency answered non-2xx (424)
	CodeItemTimeout       = "itemTimeout"       // the item ran past ItemTimeout (504)
	CodeDeadlineExceeded  = "batchDeadline"     // the batch ran past Deadline (504)
	CodeUpstream          = "upstreamError"     // transport failure to the listener (502)
	CodeItemTooLarge      = "responseTooLarge"  // item body over MaxItemResponseBytes (507)
	CodeBatchTooLarge     = "batchResponseFull" // MaxTotalResponseBytes reached (507)
	CodeNoClientAddress   = "noClientAddress"   // the batch request carries no client address (500)
)

// Limits of the parser that are not worth configuring.
const (
	maxIDLen          = 64
	maxJSONDepth      = 32
	maxItemHeaders    = 32
	maxItemHeaderSize = 8 << 10
)

// Item is one validated batch item. Err, when set, is answered as the
// item's response without sending anything.
type Item struct {
	ID     string
	Method string
	// Path and Query form the request-target, validated by url.go.
	Path, Query string
	// Header holds the item's own headers (canonical keys), checked
	// against reservedHeader and the forwarded names.
	Header http.Header
	// Body is sent when HasBody: JSON as given, other types decoded from
	// base64.
	Body    []byte
	HasBody bool
	// Deps are the indexes of the items this one depends on, deduplicated.
	Deps []int
	Err  *Error
}

// Batch is a parsed batch in request order, its dependency graph acyclic.
type Batch struct {
	Items []Item
}

// wire types: the Graph JSON batching format.
type wireBatch struct {
	Requests []wireItem `json:"requests"`
}

type wireItem struct {
	ID        *string           `json:"id"`
	Method    string            `json:"method"`
	URL       string            `json:"url"`
	Headers   map[string]string `json:"headers"`
	Body      json.RawMessage   `json:"body"`
	DependsOn []string          `json:"dependsOn"`
}

// parser parses batches for one Config. Safe for concurrent use.
type parser struct {
	maxItems int
	maxBytes int
	urls     *urlValidator
	forward  map[string]bool
}

func newParser(c Config) *parser {
	p := &parser{maxItems: c.MaxItems, maxBytes: c.MaxRequestBytes, urls: newURLValidator(c), forward: make(map[string]bool)}
	for _, h := range c.ForwardHeaders {
		p.forward[h] = true
	}
	return p
}

func batchErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Parse decodes and validates a batch body. A batch-level problem is
// returned as an *Error (400, or 413 for size); item-level problems are set
// on the items.
func (p *parser) Parse(body []byte) (*Batch, *Error) {
	if len(body) > p.maxBytes {
		return nil, batchErr(http.StatusRequestEntityTooLarge, CodeRequestTooLarge, "batch body over %d bytes", p.maxBytes)
	}
	if !utf8.Valid(body) {
		return nil, batchErr(http.StatusBadRequest, CodeInvalidRequest, "batch body is not valid UTF-8")
	}
	if d := jsonDepth(body); d > maxJSONDepth {
		return nil, batchErr(http.StatusBadRequest, CodeInvalidRequest, "JSON nested deeper than %d", maxJSONDepth)
	}
	var w wireBatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, batchErr(http.StatusBadRequest, CodeInvalidRequest, "malformed batch JSON: %s", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, batchErr(http.StatusBadRequest, CodeInvalidRequest, "malformed batch JSON: data after the object")
	}
	switch n := len(w.Requests); {
	case n == 0:
		return nil, batchErr(http.StatusBadRequest, CodeInvalidRequest, "requests must hold at least one item")
	case n > p.maxItems:
		return nil, batchErr(http.StatusBadRequest, CodeTooManyItems, "%d items, at most %d allowed", n, p.maxItems)
	}
	index := make(map[string]int, len(w.Requests))
	for i, it := range w.Requests {
		if it.ID == nil || !validID(*it.ID) {
			return nil, batchErr(http.StatusBadRequest, CodeInvalidID, "requests[%d]: id must be 1-%d printable ASCII characters", i, maxIDLen)
		}
		if _, dup := index[*it.ID]; dup {
			return nil, batchErr(http.StatusBadRequest, CodeDuplicateID, "duplicate id %s", quoteShort(*it.ID))
		}
		index[*it.ID] = i
	}
	b := &Batch{Items: make([]Item, len(w.Requests))}
	for i, it := range w.Requests {
		item := &b.Items[i]
		item.ID = *it.ID
		if len(it.DependsOn) > len(w.Requests) {
			return nil, batchErr(http.StatusBadRequest, CodeUnknownDependency, "id %s: too many dependsOn entries", quoteShort(item.ID))
		}
		for _, d := range it.DependsOn {
			j, ok := index[d]
			if !ok {
				return nil, batchErr(http.StatusBadRequest, CodeUnknownDependency, "id %s depends on unknown id %s", quoteShort(item.ID), quoteShort(d))
			}
			if !containsInt(item.Deps, j) {
				item.Deps = append(item.Deps, j)
			}
		}
		item.Err = p.item(item, &it)
	}
	if id, ok := cycle(b.Items); ok {
		return nil, batchErr(http.StatusBadRequest, CodeCyclicDependency, "dependsOn cycle through id %s", quoteShort(id))
	}
	return b, nil
}

// allowedMethods are the methods an item may use; CONNECT and TRACE are not.
var allowedMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// item validates one item's method, url, headers and body into it.
func (p *parser) item(it *Item, w *wireItem) *Error {
	m := strings.ToUpper(w.Method)
	if !containsString(allowedMethods, m) {
		return batchErr(http.StatusBadRequest, CodeInvalidMethod, "method %s not allowed", quoteShort(w.Method))
	}
	it.Method = m
	path, query, err := p.urls.Validate(w.URL)
	if err != nil {
		code := CodeInvalidURL
		if errors.Is(err, errURLNested) {
			code = CodeNestedBatch
		}
		return batchErr(http.StatusBadRequest, code, "%s", err.Error())
	}
	it.Path, it.Query = path, query
	if len(w.Headers) > maxItemHeaders {
		return batchErr(http.StatusBadRequest, CodeInvalidHeader, "more than %d headers", maxItemHeaders)
	}
	it.Header = make(http.Header, len(w.Headers))
	size := 0
	for name, value := range w.Headers {
		size += len(name) + len(value)
		lname := strings.ToLower(name)
		switch {
		case !validHeaderName(lname) || strings.Contains(lname, "_"):
			// Envoy's headers_with_underscores_action: REJECT_REQUEST would fail
			// the sub-request; say why here instead.
			return batchErr(http.StatusBadRequest, CodeInvalidHeader, "invalid header name %s", quoteShort(name))
		case reservedHeader(lname) || itemForbidden(lname) || p.forward[lname]:
			return batchErr(http.StatusBadRequest, CodeInvalidHeader, "header %s may not be set by a batch item", quoteShort(lname))
		case !validHeaderValue(value):
			return batchErr(http.StatusBadRequest, CodeInvalidHeader, "invalid value for header %s", quoteShort(lname))
		}
		key := http.CanonicalHeaderKey(lname)
		if _, dup := it.Header[key]; dup {
			return batchErr(http.StatusBadRequest, CodeInvalidHeader, "header %s given twice", quoteShort(lname))
		}
		it.Header[key] = []string{value}
	}
	if size > maxItemHeaderSize {
		return batchErr(http.StatusBadRequest, CodeInvalidHeader, "headers over %d bytes", maxItemHeaderSize)
	}
	if len(w.Body) == 0 || string(w.Body) == "null" {
		return nil
	}
	ct := it.Header.Get("Content-Type")
	if ct == "" {
		return batchErr(http.StatusBadRequest, CodeInvalidBody, "a body needs a content-type header")
	}
	it.HasBody = true
	if isJSONType(ct) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, w.Body); err != nil {
			return batchErr(http.StatusBadRequest, CodeInvalidBody, "invalid JSON body")
		}
		it.Body = buf.Bytes()
		return nil
	}
	var s string
	if err := json.Unmarshal(w.Body, &s); err != nil {
		return batchErr(http.StatusBadRequest, CodeInvalidBody, "a body of type %s must be a base64 string", quoteShort(ct))
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return batchErr(http.StatusBadRequest, CodeInvalidBody, "body is not valid base64")
	}
	it.Body = raw
	return nil
}

// isJSONType reports whether a content-type is JSON: application/json or a
// +json structured syntax suffix (RFC 6839).
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

// cycle finds a dependency cycle with Kahn's algorithm and returns the id of
// an item on or behind it.
func cycle(items []Item) (string, bool) {
	indeg := make([]int, len(items))
	next := make([][]int, len(items))
	for i, it := range items {
		indeg[i] = len(it.Deps)
		for _, d := range it.Deps {
			next[d] = append(next[d], i)
		}
	}
	queue := make([]int, 0, len(items))
	for i, n := range indeg {
		if n == 0 {
			queue = append(queue, i)
		}
	}
	seen := 0
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		seen++
		for _, j := range next[i] {
			if indeg[j]--; indeg[j] == 0 {
				queue = append(queue, j)
			}
		}
	}
	if seen == len(items) {
		return "", false
	}
	for i, n := range indeg {
		if n > 0 {
			return items[i].ID, true
		}
	}
	return "", false
}

// jsonDepth returns the deepest nesting of objects and arrays in data,
// stopping early past maxJSONDepth. Brackets inside strings are skipped.
func jsonDepth(data []byte) int {
	depth, max, inStr := 0, 0, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case '"':
			inStr = true
		case '{', '[':
			depth++
			if depth > max {
				max = depth
				if max > maxJSONDepth {
					return max
				}
			}
		case '}', ']':
			depth--
		}
	}
	return max
}

// jsonProblem describes a decoding error without echoing client input.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %s must be %s", quoteShort(typ.Field), typ.Type.String())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return "unknown field " + quoteShort(strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
	}
	return "invalid JSON"
}

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= 0x20 || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

func containsInt(s []int, v int) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

func containsString(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}
