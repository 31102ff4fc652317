package cachefilter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
)

// Binary encoding of an Entry, the value of an L2 entry key:
//
//	version    1 byte, codecVersion
//	status     uvarint, 100..999
//	flags      1 byte: 1 MustRevalidate, 2 NoCache, 4 RequestTime set, 8 ResponseTime set
//	times      for each set time: Unix seconds (varint), nanoseconds (uvarint, < 1e9)
//	durations  InitialAge, Lifetime, StaleWhileRevalidate, StaleIfError: varint nanoseconds
//	header     count (uvarint), then name and value of each field as strings
//	vary, tags count (uvarint), then each as a string
//	validators ETag, LastModified as strings
//	body       as a string (the rest of the value must be exactly it)
//
// A string is its length (uvarint) followed by its bytes. Decoding checks every length and count
// against the bytes that remain before allocating, so a value of n bytes never allocates much
// more than n bytes whatever it claims, and rejects anything but exactly one well-formed entry.
const codecVersion = 1

// Limits of the encoding, above what Put accepts (so every stored entry decodes).
const (
	maxEntryBytesLimit = 64 << 20 // largest MaxEntryBytes, and largest encoded entry
	maxHeaderFields    = 1024
	maxVaryNames       = 64
	maxTags            = 128
	maxTagBytes        = 256
	maxPathBytes       = 4096
	maxKeyBytes        = 512
)

const (
	flagMustRevalidate = 1 << iota
	flagNoCache
	flagRequestTime
	flagResponseTime
	flagsKnown = flagMustRevalidate | flagNoCache | flagRequestTime | flagResponseTime
)

// ErrCorrupt is returned, wrapped with the reason, for an encoded entry or message that does
// not decode: corrupt, truncated, of another version, or hostile.
var ErrCorrupt = errors.New("cachefilter: corrupt encoding")

// appendEntry appends the encoding of e to b.
func appendEntry(b []byte, e *httpcache.Entry) []byte {
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(e.Status))
	var flags byte
	if e.MustRevalidate {
		flags |= flagMustRevalidate
	}
	if e.NoCache {
		flags |= flagNoCache
	}
	if !e.RequestTime.IsZero() {
		flags |= flagRequestTime
	}
	if !e.ResponseTime.IsZero() {
		flags |= flagResponseTime
	}
	b = append(b, flags)
	if !e.RequestTime.IsZero() {
		b = appendTime(b, e.RequestTime)
	}
	if !e.ResponseTime.IsZero() {
		b = appendTime(b, e.ResponseTime)
	}
	for _, d := range [...]time.Duration{e.InitialAge, e.Lifetime, e.StaleWhileRevalidate, e.StaleIfError} {
		b = binary.AppendVarint(b, int64(d))
	}
	b = binary.AppendUvarint(b, uint64(len(e.Header)))
	for _, h := range e.Header {
		b = appendString(b, h.Name)
		b = appendString(b, h.Value)
	}
	b = appendStrings(b, e.Vary)
	b = appendStrings(b, e.Tags)
	b = appendString(b, e.ETag)
	b = appendString(b, e.LastModified)
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	return append(b, e.Body...)
}

// decodeEntry decodes an entry encoded by appendEntry. The entry's Body aliases b: the caller
// must not change b afterwards. Errors wrap ErrCorrupt.
func decodeEntry(b []byte) (*httpcache.Entry, error) {
	if len(b) > maxEntryBytesLimit {
		return nil, fmt.Errorf("%w: entry of %d bytes above %d", ErrCorrupt, len(b), maxEntryBytesLimit)
	}
	r := reader{b: b}
	if v := r.byte(); v != codecVersion && r.err == nil {
		return nil, fmt.Errorf("%w: entry version %d, want %d", ErrCorrupt, v, codecVersion)
	}
	e := &httpcache.Entry{}
	status := r.uvarint()
	if r.err == nil && (status < 100 || status > 999) {
		return nil, fmt.Errorf("%w: status %d", ErrCorrupt, status)
	}
	e.Status = int(status)
	flags := r.byte()
	if flags&^flagsKnown != 0 && r.err == nil {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, flags)
	}
	e.MustRevalidate = flags&flagMustRevalidate != 0
	e.NoCache = flags&flagNoCache != 0
	if flags&flagRequestTime != 0 {
		e.RequestTime = r.time()
	}
	if flags&flagResponseTime != 0 {
		e.ResponseTime = r.time()
	}
	e.InitialAge = time.Duration(r.varint())
	e.Lifetime = time.Duration(r.varint())
	e.StaleWhileRevalidate = time.Duration(r.varint())
	e.StaleIfError = time.Duration(r.varint())
	if n := r.count(maxHeaderFields, 2); n > 0 {
		e.Header = make(header.List, n)
		for i := range e.Header {
			e.Header[i] = header.Field{Name: r.string(), Value: r.string()}
		}
	}
	e.Vary = r.strings(maxVaryNames)
	e.Tags = r.strings(maxTags)
	e.ETag = r.string()
	e.LastModified = r.string()
	e.Body = r.bytes()
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the entry", ErrCorrupt, len(r.b))
	}
	return e, nil
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// reader decodes what the append functions encode. After the first error every method returns a
// zero value and err keeps that error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad or truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad or truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) time() time.Time {
	sec := r.varint()
	nsec := r.uvarint()
	if r.err != nil {
		return time.Time{}
	}
	if nsec >= 1e9 {
		r.fail("nanoseconds %d out of range", nsec)
		return time.Time{}
	}
	// Go times span more than int64 seconds of Unix time allow; every int64 is representable.
	return time.Unix(sec, int64(nsec)).UTC()
}

// count reads a count of items of at least minBytes bytes each, at most limit, and no more than
// the remaining bytes can hold: so a hostile count never sizes an allocation.
func (r *reader) count(limit, minBytes int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(limit) || n > uint64(len(r.b)/minBytes) {
		r.fail("count %d above the limit %d or the %d bytes left", n, limit, len(r.b))
		return 0
	}
	return int(n)
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > math.MaxInt {
		r.fail("length %d above the %d bytes left", n, len(r.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) strings(limit int) []string {
	n := r.count(limit, 1)
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string()
	}
	return ss
}
