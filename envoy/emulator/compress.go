package emulator

import (
	"compress/gzip"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/andybalholm/brotli"
	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	"github.com/klauspost/compress/zstd"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/header"
)

// defaultCompressibleTypes is the compressor filter's default content_type
// list (source/extensions/filters/http/common/compressor/compressor.cc).
var defaultCompressibleTypes = []string{
	"text/html", "text/plain", "text/css", "application/javascript", "application/x-javascript",
	"text/javascript", "text/x-javascript", "text/ecmascript", "text/js", "text/jscript",
	"text/x-js", "application/ecmascript", "application/x-json", "application/xml",
	"application/json", "image/svg+xml", "text/xml", "application/xhtml+xml",
}

// compressor is one compressor filter's response-direction settings.
// Immutable after New; safe for concurrent use.
type compressor struct {
	name, encoding     string
	minLength          uint64
	types              map[string]bool
	disableOnEtag      bool
	weakenEtag         bool
	removeAcceptEnc    bool
	uncompressibleCode map[int]bool
	newWriter          func(io.Writer) (io.WriteCloser, error)
}

func newCompressor(c envoy.Compressor) (*compressor, error) {
	cfg := c.Config
	if cfg.GetChooseFirst() || cfg.GetRequestDirectionConfig() != nil {
		return nil, fmt.Errorf("compressor %q: choose_first and request compression are not emulated", c.Name)
	}
	out := &compressor{name: c.Name, encoding: c.Encoding, minLength: 30, types: map[string]bool{}, uncompressibleCode: map[int]bool{}}
	types := cfg.GetContentType()
	if rd := cfg.GetResponseDirectionConfig(); rd != nil {
		// With response_direction_config set, the deprecated top-level fields
		// are ignored (Compressor.response_direction_config).
		cc := rd.GetCommonConfig()
		if cc.GetEnabled() != nil || len(cc.GetContentTypeMatcher()) > 0 {
			return nil, fmt.Errorf("compressor %q: enabled and content_type_matcher are not emulated", c.Name)
		}
		if v := cc.GetMinContentLength(); v != nil {
			out.minLength = uint64(v.GetValue())
		}
		types = cc.GetContentType()
		out.disableOnEtag = rd.GetDisableOnEtagHeader()
		out.weakenEtag = rd.GetWeakenEtagOnCompress()
		out.removeAcceptEnc = rd.GetRemoveAcceptEncodingHeader()
		for _, code := range rd.GetUncompressibleResponseCodes() {
			out.uncompressibleCode[int(code)] = true
		}
		if rd.GetStatusHeaderEnabled() {
			return nil, fmt.Errorf("compressor %q: status_header_enabled is not emulated", c.Name)
		}
	} else {
		if v := cfg.GetContentLength(); v != nil && v.GetValue() > 0 {
			out.minLength = uint64(v.GetValue())
		}
		out.disableOnEtag = cfg.GetDisableOnEtagHeader()
		out.removeAcceptEnc = cfg.GetRemoveAcceptEncodingHeader()
	}
	if len(types) == 0 {
		types = defaultCompressibleTypes
	}
	for _, t := range types {
		out.types[strings.ToLower(t)] = true
	}
	switch lib := c.Library.(type) {
	case *gzipv3.Gzip:
		// Gzip.compression_level: DEFAULT_COMPRESSION is zlib's default (6).
		level := gzip.DefaultCompression
		switch lib.GetCompressionLevel() {
		case gzipv3.Gzip_BEST_SPEED:
			level = gzip.BestSpeed
		case gzipv3.Gzip_BEST_COMPRESSION:
			level = gzip.BestCompression
		case gzipv3.Gzip_DEFAULT_COMPRESSION:
		default:
			// COMPRESSION_LEVEL_n enum values are n.
			level = int(lib.GetCompressionLevel())
		}
		out.newWriter = func(w io.Writer) (io.WriteCloser, error) { return gzip.NewWriterLevel(w, level) }
	case *brotliv3.Brotli:
		// Brotli.quality defaults to 3, window_bits to 18.
		q, lgwin := 3, 18
		if v := lib.GetQuality(); v != nil {
			q = int(v.GetValue())
		}
		if v := lib.GetWindowBits(); v != nil {
			lgwin = int(v.GetValue())
		}
		out.newWriter = func(w io.Writer) (io.WriteCloser, error) {
			return brotli.NewWriterOptions(w, brotli.WriterOptions{Quality: q, LGWin: lgwin}), nil
		}
	case *zstdv3.Zstd:
		// Zstd.compression_level defaults to ZSTD_CLEVEL_DEFAULT (3).
		lvl := 3
		if v := lib.GetCompressionLevel(); v != nil {
			lvl = int(v.GetValue())
		}
		if lib.GetDictionary() != nil {
			return nil, fmt.Errorf("compressor %q: zstd dictionaries are not emulated", c.Name)
		}
		out.newWriter = func(w io.Writer) (io.WriteCloser, error) {
			return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(lvl)), zstd.WithEncoderCRC(lib.GetEnableChecksum()))
		}
	default:
		return nil, fmt.Errorf("compressor %q: library %T is not emulated", c.Name, c.Library)
	}
	return out, nil
}

// contentTypeValue is the Content-Type without parameters, trimmed
// (StringUtil::cropRight(value, ";")).
func contentTypeValue(h *header.List) (string, bool) {
	v, ok := h.Lookup("content-type")
	if !ok {
		return "", false
	}
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(strings.TrimSpace(v)), true
}

// chooseEncoding is CompressorFilter::chooseEncoding: the Accept-Encoding
// token with the highest q-value among the chain's compressors that accept
// the response's content type ("identity" and "*" included; "*" picks the
// first registered; ties go to the earlier token; q=0 excludes an encoding).
func chooseEncoding(acceptEncoding string, chain []*compressor, h *header.List) string {
	ct, hasCT := contentTypeValue(h)
	allowed := map[string]int{}
	for _, c := range chain {
		if hasCT && ct != "" && !c.types[ct] {
			continue
		}
		if _, ok := allowed[c.encoding]; !ok {
			allowed[c.encoding] = len(allowed)
		}
	}
	type pair struct {
		enc string
		q   float64
	}
	var pairs []pair
	for _, tok := range strings.Split(acceptEncoding, ",") {
		if strings.TrimSpace(tok) == "" {
			continue
		}
		enc, params, hasParams := strings.Cut(tok, ";")
		p := pair{enc: strings.TrimSpace(enc), q: 1}
		if hasParams {
			k, v, hasEq := strings.Cut(params, "=")
			if hasEq && strings.EqualFold(strings.TrimSpace(k), "q") {
				q, err := strconv.ParseFloat(strings.TrimSpace(v), 32)
				if err != nil {
					continue // unparseable q-value: token skipped
				}
				p.q = q
			}
		}
		pairs = append(pairs, p)
		if p.q == 0 {
			delete(allowed, p.enc)
		}
	}
	if len(pairs) == 0 || len(allowed) == 0 {
		return "identity"
	}
	choice := pair{enc: "identity", q: 0}
	for _, p := range pairs {
		_, ok := allowed[p.enc]
		if p.q > choice.q && (ok || p.enc == "identity" || p.enc == "*") {
			choice = p
		}
	}
	switch {
	case choice.q == 0:
		return "identity"
	case choice.enc == "*":
		first, idx := "", len(allowed)
		for enc, i := range allowed {
			if i < idx {
				first, idx = enc, i
			}
		}
		return first
	}
	return choice.enc
}

// isMinimumContentLength: Content-Length at least min_content_length, or no
// Content-Length and a chunked Transfer-Encoding.
func (c *compressor) isMinimumContentLength(h *header.List) bool {
	if v, ok := h.Lookup("content-length"); ok {
		n, err := strconv.ParseUint(v, 10, 64)
		return err == nil && n >= c.minLength
	}
	return hasToken(h.Get("transfer-encoding"), "chunked")
}

func (c *compressor) isContentTypeAllowed(h *header.List) bool {
	ct, ok := contentTypeValue(h)
	if !ok {
		return true
	}
	return c.types[ct]
}

func (c *compressor) isTransferEncodingAllowed(h *header.List) bool {
	for _, tok := range strings.Split(h.Get("transfer-encoding"), ",") {
		t := strings.TrimSpace(tok)
		if strings.EqualFold(t, c.encoding) || strings.EqualFold(t, "gzip") || strings.EqualFold(t, "deflate") {
			return false
		}
	}
	return true
}

func hasToken(list, token string) bool {
	for _, t := range strings.Split(list, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// insertVary adds "Accept-Encoding" to Vary unless present
// (CompressorFilter::insertVaryHeader).
func insertVary(h *header.List) {
	v, ok := h.Lookup("vary")
	if !ok {
		h.Set("vary", "Accept-Encoding")
		return
	}
	for _, t := range strings.Split(v, ",") {
		if strings.TrimSpace(t) == "Accept-Encoding" {
			return
		}
	}
	h.Set("vary", v+", Accept-Encoding")
}

// sanitizeEtag keeps weak validators and drops strong ones, or weakens them
// with weaken_etag_on_compress (CompressorFilter::sanitizeEtagHeader).
func (c *compressor) sanitizeEtag(h *header.List) {
	v, ok := h.Lookup("etag")
	if !ok || len(v) <= 2 || ((v[0] == 'w' || v[0] == 'W') && v[1] == '/') {
		return
	}
	if c.weakenEtag {
		h.Set("etag", "W/"+v)
		return
	}
	h.Del("etag")
}
