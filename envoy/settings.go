package envoy

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	brotliv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/compressor/v3"
	gzipv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/compressor/v3"
	zstdv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/compressor/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	jwtauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
)

// Listener names of envoy.yaml. Ingress faces clients. Internal takes only
// Sluice's own requests (batch items, cache warming): it trusts the client
// address Sluice sets on each request, so only Sluice may reach it
// (loopback in a sidecar layout, a NetworkPolicy otherwise); Sluice's
// extproc.HeaderClientAddress carries it. Stats exposes
// Envoy's /stats/prometheus and nothing else of the admin interface.
const (
	IngressListener  = "ingress"
	InternalListener = "internal"
	StatsListener    = "stats"
)

// Settings is what the emulator needs from one listener of a bootstrap: its
// HTTP connection manager, its filters and routes, and where each cluster
// lives. Messages are the parsed protos; treat them as read-only. A Settings
// is safe for concurrent reads.
type Settings struct {
	// Listener is the listener's name; Address its "host:port".
	Listener string
	Address  string
	// BufferLimit is the listener's per_connection_buffer_limit_bytes
	// (Envoy's default, 1 MiB, when unset): the default limit for buffered
	// request and response bodies.
	BufferLimit uint32
	// HCM is the listener's HTTP connection manager.
	HCM *hcmv3.HttpConnectionManager
	// Filters are the HTTP filter names in config order.
	Filters []string
	// Compressors are the compressor filters, in config order.
	Compressors []Compressor
	// JWTAuthn is the jwt_authn filter's config (nil when absent), named
	// JWTAuthnName.
	JWTAuthn     *jwtauthnv3.JwtAuthentication
	JWTAuthnName string
	// ExtProc and RateLimit are the ext_proc and ratelimit filter configs
	// (nil when absent); ExtProcName and RateLimitName their filter names,
	// the keys of their typed_per_filter_config.
	ExtProc       *extprocv3.ExternalProcessor
	ExtProcName   string
	RateLimit     *ratelimitv3.RateLimit
	RateLimitName string
	// Router is the router filter's config.
	Router *routerv3.Router
	// Routes is the HCM's static route configuration.
	Routes *routev3.RouteConfiguration
	// Clusters maps each static cluster to the "host:port" of its first
	// endpoint; ClusterConfigs holds the clusters themselves.
	Clusters       map[string]string
	ClusterConfigs map[string]*clusterv3.Cluster
}

// Compressor is one envoy.filters.http.compressor filter.
type Compressor struct {
	// Name is the filter name; Encoding the Content-Encoding it produces
	// ("gzip", "br" or "zstd").
	Name     string
	Encoding string
	Config   *compressorv3.Compressor
	// Library is the compressor_library config: *gzipv3.Gzip,
	// *brotliv3.Brotli or *zstdv3.Zstd.
	Library proto.Message
}

// defaultBufferLimit is Envoy's default per_connection_buffer_limit_bytes.
const defaultBufferLimit = 1 << 20

// ParseSettings loads a bootstrap with LoadBootstrap and extracts the
// Settings of its first listener.
func ParseSettings(data []byte) (*Settings, error) {
	ls, err := ParseListeners(data)
	if err != nil {
		return nil, err
	}
	return ls[0], nil
}

// ParseListeners loads a bootstrap with LoadBootstrap and extracts the
// Settings of every static listener, in config order. Every listener must be
// an HTTP connection manager with a static route_config.
func ParseListeners(data []byte) ([]*Settings, error) {
	b, err := LoadBootstrap(data)
	if err != nil {
		return nil, err
	}
	listeners := b.GetStaticResources().GetListeners()
	if len(listeners) == 0 {
		return nil, errors.New("envoy: no static listener")
	}
	clusters, configs := clustersFrom(b)
	out := make([]*Settings, 0, len(listeners))
	for _, l := range listeners {
		s, err := settingsFrom(l)
		if err != nil {
			return nil, err
		}
		s.Clusters, s.ClusterConfigs = clusters, configs
		out = append(out, s)
	}
	return out, nil
}

// Find returns the listener named name, or nil.
func Find(ls []*Settings, name string) *Settings {
	for _, s := range ls {
		if s.Listener == name {
			return s
		}
	}
	return nil
}

// clustersFrom maps each static cluster to the "host:port" of its first
// endpoint.
func clustersFrom(b *bootstrapv3.Bootstrap) (map[string]string, map[string]*clusterv3.Cluster) {
	addrs, configs := map[string]string{}, map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		configs[c.GetName()] = c
		for _, eps := range c.GetLoadAssignment().GetEndpoints() {
			for _, ep := range eps.GetLbEndpoints() {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil {
					continue
				}
				if _, ok := addrs[c.GetName()]; !ok {
					addrs[c.GetName()] = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
				}
			}
		}
	}
	return addrs, configs
}

func settingsFrom(l *listenerv3.Listener) (*Settings, error) {
	s := &Settings{
		Listener:    l.GetName(),
		BufferLimit: defaultBufferLimit,
	}
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		s.Address = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		s.BufferLimit = v.GetValue()
	}
	hcm, err := findHCM(l)
	if err != nil {
		return nil, err
	}
	s.HCM = hcm
	s.Routes = hcm.GetRouteConfig()
	if s.Routes == nil {
		return nil, fmt.Errorf("envoy: listener %q: the HTTP connection manager has no static route_config (RDS is not emulated)", l.GetName())
	}
	for _, f := range hcm.GetHttpFilters() {
		s.Filters = append(s.Filters, f.GetName())
		if f.GetTypedConfig() == nil {
			return nil, fmt.Errorf("envoy: http filter %q has no typed_config", f.GetName())
		}
		m, err := unpack(f.GetTypedConfig())
		if err != nil {
			return nil, fmt.Errorf("envoy: http filter %q: %w", f.GetName(), err)
		}
		switch c := m.(type) {
		case *compressorv3.Compressor:
			comp, err := compressorFrom(f.GetName(), c)
			if err != nil {
				return nil, err
			}
			s.Compressors = append(s.Compressors, comp)
		case *jwtauthnv3.JwtAuthentication:
			s.JWTAuthn, s.JWTAuthnName = c, f.GetName()
		case *extprocv3.ExternalProcessor:
			s.ExtProc, s.ExtProcName = c, f.GetName()
		case *ratelimitv3.RateLimit:
			s.RateLimit, s.RateLimitName = c, f.GetName()
		case *routerv3.Router:
			s.Router = c
		default:
			return nil, fmt.Errorf("envoy: listener %q: http filter %q: type %s is not emulated", l.GetName(), f.GetName(), m.ProtoReflect().Descriptor().FullName())
		}
	}
	return s, nil
}

func findHCM(l *listenerv3.Listener) (*hcmv3.HttpConnectionManager, error) {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetTypedConfig() == nil {
				continue
			}
			m, err := unpack(f.GetTypedConfig())
			if err != nil {
				return nil, fmt.Errorf("envoy: listener %q filter %q: %w", l.GetName(), f.GetName(), err)
			}
			if hcm, ok := m.(*hcmv3.HttpConnectionManager); ok {
				return hcm, nil
			}
		}
	}
	return nil, fmt.Errorf("envoy: listener %q has no HTTP connection manager", l.GetName())
}

func compressorFrom(name string, c *compressorv3.Compressor) (Compressor, error) {
	lib, err := unpack(c.GetCompressorLibrary().GetTypedConfig())
	if err != nil {
		return Compressor{}, fmt.Errorf("envoy: compressor %q: %w", name, err)
	}
	comp := Compressor{Name: name, Config: c, Library: lib}
	// Content-Encoding tokens of Envoy's compressor libraries
	// (envoy/extensions/compression/*/compressor).
	switch lib.(type) {
	case *gzipv3.Gzip:
		comp.Encoding = "gzip"
	case *brotliv3.Brotli:
		comp.Encoding = "br"
	case *zstdv3.Zstd:
		comp.Encoding = "zstd"
	default:
		return Compressor{}, fmt.Errorf("envoy: compressor %q: library %s is not emulated", name, lib.ProtoReflect().Descriptor().FullName())
	}
	return comp, nil
}
