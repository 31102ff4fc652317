package grpccodec

import (
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	procmodev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
)

// The ext_proc request decoder. Envoy sends one ProcessingRequest per message of every HTTP
// request, most of them headers; protobuf's generic decoder allocates each HeaderValue, its key
// and its value apart (about 45 allocations for 14 headers). decodeProcessingRequest decodes
// the messages Envoy sends on the request path into the same generated types with a handful of
// allocations: all HeaderValues in one slice, all keys in one string, all raw values in one
// byte slice.
//
// It only takes what it fully understands: the headers and body messages, protocol_config,
// observability_mode and an empty metadata_context (Envoy always sets one; it is empty unless
// the filter forwards metadata namespaces). Anything else (trailers, attributes, non-empty
// metadata, unknown fields, a field repeated where protobuf would merge, invalid UTF-8 in a
// string, a malformed encoding) makes it report false without touching the message, and the
// codec decodes with protobuf as before, errors included. FuzzProcessingRequest checks that
// both decoders agree.

// ProcessingRequest field numbers (envoy/service/ext_proc/v3/external_processor.proto).
const (
	fieldRequestHeaders    = 2
	fieldResponseHeaders   = 3
	fieldRequestBody       = 4
	fieldResponseBody      = 5
	fieldMetadataContext   = 8
	fieldObservabilityMode = 10
	fieldProtocolConfig    = 11
)

// span is a field's bytes within the message: b[start:end].
type span struct{ start, end int }

func (s span) len() int { return s.end - s.start }

// headerSpans are one HeaderValue's fields.
type headerSpans struct{ key, value, raw span }

// scan is what the first pass found.
type scan struct {
	oneof       protowire.Number // the ProcessingRequest.request field present, 0 if none
	hasHeaders  bool             // HttpHeaders.headers present
	endOfStream bool
	headers     int             // HeaderValues found: in inline, then in more
	inline      [32]headerSpans // on the stack (scan does not escape)
	more        []headerSpans   // the HeaderValues after the first len(inline)
	keyBytes    int
	valueBytes  int
	rawBytes    int

	body                                      span // HttpBody.body
	bodyEOSWithoutMessage, bodyGRPCCompressed bool
	bodyDrainComplete                         bool

	hasMetadata   bool
	observability bool
	hasProtocol   bool
	protocol      [3]uint64 // request_body_mode, response_body_mode, send_body_without_waiting…
}

// decoded holds the messages around the headers of one ProcessingRequest, allocated together.
type decoded struct {
	reqHeaders  extprocv3.ProcessingRequest_RequestHeaders
	resHeaders  extprocv3.ProcessingRequest_ResponseHeaders
	reqBody     extprocv3.ProcessingRequest_RequestBody
	resBody     extprocv3.ProcessingRequest_ResponseBody
	httpHeaders extprocv3.HttpHeaders
	headerMap   corev3.HeaderMap
	httpBody    extprocv3.HttpBody
	metadata    corev3.Metadata
	protocol    extprocv3.ProtocolConfiguration
}

// decodeProcessingRequest decodes b into m (which it resets) and reports true, or reports false
// and leaves m alone when b holds anything it does not take (see above).
func decodeProcessingRequest(b []byte, m *extprocv3.ProcessingRequest) bool {
	var sc scan
	if !sc.request(b) {
		return false
	}
	m.Reset()
	d := &decoded{}
	switch sc.oneof {
	case fieldRequestHeaders, fieldResponseHeaders:
		sc.fillHeaders(b, d)
		if sc.oneof == fieldRequestHeaders {
			d.reqHeaders.RequestHeaders = &d.httpHeaders
			m.Request = &d.reqHeaders
		} else {
			d.resHeaders.ResponseHeaders = &d.httpHeaders
			m.Request = &d.resHeaders
		}
	case fieldRequestBody, fieldResponseBody:
		hb := &d.httpBody
		if n := sc.body.len(); n > 0 {
			hb.Body = append(make([]byte, 0, n), b[sc.body.start:sc.body.end]...)
		}
		hb.EndOfStream = sc.endOfStream
		hb.EndOfStreamWithoutMessage = sc.bodyEOSWithoutMessage
		hb.GrpcMessageCompressed = sc.bodyGRPCCompressed
		hb.DrainComplete = sc.bodyDrainComplete
		if sc.oneof == fieldRequestBody {
			d.reqBody.RequestBody = hb
			m.Request = &d.reqBody
		} else {
			d.resBody.ResponseBody = hb
			m.Request = &d.resBody
		}
	}
	if sc.hasMetadata {
		m.MetadataContext = &d.metadata
	}
	m.ObservabilityMode = sc.observability
	if sc.hasProtocol {
		d.protocol.RequestBodyMode = procmodev3.ProcessingMode_BodySendMode(int32(sc.protocol[0]))
		d.protocol.ResponseBodyMode = procmodev3.ProcessingMode_BodySendMode(int32(sc.protocol[1]))
		d.protocol.SendBodyWithoutWaitingForHeaderResponse = sc.protocol[2] != 0
		m.ProtocolConfig = &d.protocol
	}
	return true
}

// fillHeaders builds d's HttpHeaders from the spans: one allocation each for the HeaderValues,
// their pointers, the keys, the values (when any is set) and the raw values.
func (sc *scan) fillHeaders(b []byte, d *decoded) {
	d.httpHeaders.EndOfStream = sc.endOfStream
	if !sc.hasHeaders {
		return
	}
	d.httpHeaders.Headers = &d.headerMap
	n := sc.headers
	if n == 0 {
		return
	}
	vals := make([]corev3.HeaderValue, n)
	ptrs := make([]*corev3.HeaderValue, n)
	allKeys := sc.join(b, func(h headerSpans) span { return h.key }, sc.keyBytes)
	allValues := sc.join(b, func(h headerSpans) span { return h.value }, sc.valueBytes)
	var raw []byte
	if sc.rawBytes > 0 {
		raw = make([]byte, 0, sc.rawBytes)
	}
	ko, vo := 0, 0
	for i := range n {
		h := sc.header(i)
		v := &vals[i]
		v.Key = allKeys[ko : ko+h.key.len()]
		ko += h.key.len()
		if n := h.value.len(); n > 0 {
			v.Value = allValues[vo : vo+n]
			vo += n
		}
		if n := h.raw.len(); n > 0 {
			start := len(raw)
			raw = append(raw, b[h.raw.start:h.raw.end]...)
			// Capacity ends with the value, so an append to one raw value cannot overwrite
			// the next.
			v.RawValue = raw[start:len(raw):len(raw)]
		}
		ptrs[i] = v
	}
	d.headerMap.Headers = ptrs
}

// join returns the fields that field picks of every HeaderValue, in one string of n bytes.
func (sc *scan) join(b []byte, field func(headerSpans) span, n int) string {
	if n == 0 {
		return ""
	}
	var sb strings.Builder
	sb.Grow(n)
	for i := range sc.headers {
		f := field(sc.header(i))
		sb.Write(b[f.start:f.end])
	}
	return sb.String()
}

// header returns the spans of the i-th HeaderValue found.
func (sc *scan) header(i int) headerSpans {
	if i < len(sc.inline) {
		return sc.inline[i]
	}
	return sc.more[i-len(sc.inline)]
}

// request scans a ProcessingRequest.
func (sc *scan) request(b []byte) bool {
	var seen uint64 // field numbers seen, to refuse repeats (protobuf would merge them)
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 || num >= 64 || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		off += n
		switch {
		case typ == protowire.VarintType && num == fieldObservabilityMode:
			v, n := protowire.ConsumeVarint(b[off:])
			if n < 0 {
				return false
			}
			sc.observability = v != 0
			off += n
		case typ == protowire.BytesType:
			sub, n := protowire.ConsumeBytes(b[off:])
			if n < 0 {
				return false
			}
			start := off + n - len(sub)
			off += n
			ok := false
			switch num {
			case fieldRequestHeaders, fieldResponseHeaders:
				ok = sc.oneof == 0 && sc.httpHeaders(b, start, off)
				sc.oneof = num
			case fieldRequestBody, fieldResponseBody:
				ok = sc.oneof == 0 && sc.httpBody(b, start, off)
				sc.oneof = num
			case fieldMetadataContext:
				// Only an empty Metadata: its maps take protobuf's decoder.
				ok, sc.hasMetadata = len(sub) == 0, true
			case fieldProtocolConfig:
				ok, sc.hasProtocol = sc.protocolConfig(sub), true
			}
			if !ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// httpHeaders scans the HttpHeaders in b[start:end].
func (sc *scan) httpHeaders(b []byte, start, end int) bool {
	var seen uint8
	for off := start; off < end; {
		num, typ, n := protowire.ConsumeTag(b[off:end])
		if n < 0 || num > 3 || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		off += n
		switch {
		case num == 1 && typ == protowire.BytesType: // headers
			sub, n := protowire.ConsumeBytes(b[off:end])
			if n < 0 {
				return false
			}
			s := off + n - len(sub)
			off += n
			sc.hasHeaders = true
			if !sc.headerMap(b, s, off) {
				return false
			}
		case num == 3 && typ == protowire.VarintType: // end_of_stream
			v, n := protowire.ConsumeVarint(b[off:end])
			if n < 0 {
				return false
			}
			sc.endOfStream = v != 0
			off += n
		default: // attributes (2, deprecated) and anything else
			return false
		}
	}
	return true
}

// headerMap scans the HeaderMap in b[start:end]: only repeated HeaderValues (field 1).
func (sc *scan) headerMap(b []byte, start, end int) bool {
	for off := start; off < end; {
		num, typ, n := protowire.ConsumeTag(b[off:end])
		if n < 0 || num != 1 || typ != protowire.BytesType {
			return false
		}
		off += n
		sub, n := protowire.ConsumeBytes(b[off:end])
		if n < 0 {
			return false
		}
		s := off + n - len(sub)
		off += n
		if !sc.headerValue(b, s, off) {
			return false
		}
	}
	return true
}

// headerValue scans one HeaderValue in b[start:end]: key and value must be valid UTF-8 (proto3
// strings; protobuf's decoder fails on them otherwise).
func (sc *scan) headerValue(b []byte, start, end int) bool {
	var h headerSpans
	var seen uint8
	for off := start; off < end; {
		num, typ, n := protowire.ConsumeTag(b[off:end])
		if n < 0 || num < 1 || num > 3 || typ != protowire.BytesType || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		off += n
		sub, n := protowire.ConsumeBytes(b[off:end])
		if n < 0 {
			return false
		}
		sp := span{off + n - len(sub), off + n}
		off += n
		switch num {
		case 1:
			if !utf8.Valid(sub) {
				return false
			}
			h.key = sp
		case 2:
			if !utf8.Valid(sub) {
				return false
			}
			h.value = sp
		case 3:
			h.raw = sp
		}
	}
	if sc.headers < len(sc.inline) {
		sc.inline[sc.headers] = h
	} else {
		sc.more = append(sc.more, h)
	}
	sc.headers++
	sc.keyBytes += h.key.len()
	sc.valueBytes += h.value.len()
	sc.rawBytes += h.raw.len()
	return true
}

// httpBody scans the HttpBody in b[start:end].
func (sc *scan) httpBody(b []byte, start, end int) bool {
	var seen uint8
	for off := start; off < end; {
		num, typ, n := protowire.ConsumeTag(b[off:end])
		if n < 0 || num < 1 || num > 5 || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		off += n
		if num == 1 {
			if typ != protowire.BytesType {
				return false
			}
			sub, n := protowire.ConsumeBytes(b[off:end])
			if n < 0 {
				return false
			}
			sc.body = span{off + n - len(sub), off + n}
			off += n
			continue
		}
		if typ != protowire.VarintType {
			return false
		}
		v, n := protowire.ConsumeVarint(b[off:end])
		if n < 0 {
			return false
		}
		off += n
		switch num {
		case 2:
			sc.endOfStream = v != 0
		case 3:
			sc.bodyEOSWithoutMessage = v != 0
		case 4:
			sc.bodyGRPCCompressed = v != 0
		case 5:
			sc.bodyDrainComplete = v != 0
		}
	}
	return true
}

// protocolConfig scans a ProtocolConfiguration: three varints.
func (sc *scan) protocolConfig(b []byte) bool {
	var seen uint8
	for off := 0; off < len(b); {
		num, typ, n := protowire.ConsumeTag(b[off:])
		if n < 0 || num < 1 || num > 3 || typ != protowire.VarintType || seen&(1<<num) != 0 {
			return false
		}
		seen |= 1 << num
		off += n
		v, n := protowire.ConsumeVarint(b[off:])
		if n < 0 {
			return false
		}
		off += n
		sc.protocol[num-1] = v
	}
	return true
}
