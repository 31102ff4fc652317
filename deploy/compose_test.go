package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// root is the repository, seen from this package's directory (go test runs
// tests in the package directory). Compose resolves relative bind-mount
// sources against the compose file's directory, which is root.
const root = ".."

// compose is the subset of the Compose file format docker-compose.yaml uses.
// Decoding is strict, so a misspelt key (depend_on) fails the test instead of
// being ignored as it would be here; a key this struct lacks must be added
// here before the compose file may use it.
type compose struct {
	Name     string              `yaml:"name"`
	Services map[string]*service `yaml:"services"`
	Volumes  map[string]any      `yaml:"volumes"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       *build            `yaml:"build"`
	Command     []string          `yaml:"command"` // list form only: no shell splitting to guess
	Environment map[string]string `yaml:"environment"`
	Volumes     []mount           `yaml:"volumes"`
	Ports       []portMapping     `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	Healthcheck *healthcheck      `yaml:"healthcheck"`
	// DependsOn is the long (map) form, the only one that carries conditions.
	DependsOn       map[string]dependency `yaml:"depends_on"`
	StopGracePeriod string                `yaml:"stop_grace_period"`
	Restart         string                `yaml:"restart"`
}

type build struct {
	Context    string            `yaml:"context"`
	Dockerfile string            `yaml:"dockerfile"`
	Target     string            `yaml:"target"`
	Args       map[string]string `yaml:"args"`
}

type healthcheck struct {
	Test        []string `yaml:"test"`
	Interval    string   `yaml:"interval"`
	Timeout     string   `yaml:"timeout"`
	Retries     int      `yaml:"retries"`
	StartPeriod string   `yaml:"start_period"`
	Disable     bool     `yaml:"disable"`
}

type dependency struct {
	Condition string `yaml:"condition"`
	Restart   bool   `yaml:"restart"`
	Required  *bool  `yaml:"required"`
}

// mount is one entry of a service's volumes: short "source:target[:mode]"
// or long {type, source, target, read_only}.
type mount struct {
	Type     string // bind or volume
	Source   string // host path (bind) or volume name
	Target   string
	ReadOnly bool
}

func (m *mount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		parts := strings.Split(n.Value, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("line %d: volume %q is not source:target[:mode]", n.Line, n.Value)
		}
		m.Source, m.Target = parts[0], parts[1]
		if len(parts) == 3 {
			for _, o := range strings.Split(parts[2], ",") {
				if o == "ro" {
					m.ReadOnly = true
				}
			}
		}
		m.Type = "volume"
		if strings.HasPrefix(m.Source, ".") || strings.HasPrefix(m.Source, "/") || strings.HasPrefix(m.Source, "~") {
			m.Type = "bind"
		}
		return nil
	}
	var long struct {
		Type     string `yaml:"type"`
		Source   string `yaml:"source"`
		Target   string `yaml:"target"`
		ReadOnly bool   `yaml:"read_only"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	*m = mount{Type: long.Type, Source: long.Source, Target: long.Target, ReadOnly: long.ReadOnly}
	return nil
}

// portMapping is one entry of a service's ports: short
// "[host_ip:][published:]target[/protocol]" or long {target, published, host_ip, protocol}.
type portMapping struct {
	HostIP    string
	Published int // 0: not published on a fixed port
	Target    int
}

func (p *portMapping) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		spec, _, _ := strings.Cut(n.Value, "/")
		parts := strings.Split(spec, ":")
		var err error
		switch len(parts) {
		case 1:
			p.Target, err = strconv.Atoi(parts[0])
		case 2:
			if p.Published, err = strconv.Atoi(parts[0]); err == nil {
				p.Target, err = strconv.Atoi(parts[1])
			}
		case 3:
			p.HostIP = parts[0]
			if p.Published, err = strconv.Atoi(parts[1]); err == nil {
				p.Target, err = strconv.Atoi(parts[2])
			}
		default:
			err = fmt.Errorf("too many colons")
		}
		if err != nil {
			return fmt.Errorf("line %d: port %q: %w", n.Line, n.Value, err)
		}
		return nil
	}
	var long struct {
		Target    int    `yaml:"target"`
		Published string `yaml:"published"`
		HostIP    string `yaml:"host_ip"`
		Protocol  string `yaml:"protocol"`
	}
	if err := n.Decode(&long); err != nil {
		return err
	}
	p.Target, p.HostIP = long.Target, long.HostIP
	if long.Published != "" {
		v, err := strconv.Atoi(long.Published)
		if err != nil {
			return fmt.Errorf("line %d: published %q: %w", n.Line, long.Published, err)
		}
		p.Published = v
	}
	return nil
}

func loadCompose(t *testing.T) *compose {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yaml has no services")
	}
	return &c
}

// svc returns the named service or fails the test.
func (c *compose) svc(t *testing.T, name string) *service {
	t.Helper()
	s, ok := c.Services[name]
	if !ok {
		t.Fatalf("docker-compose.yaml has no service %q", name)
	}
	return s
}

// hostPath maps a path inside the service's container to the repository file
// bind-mounted there (the longest matching mount target wins).
func (s *service) hostPath(p string) (string, error) {
	best := -1
	for i, m := range s.Volumes {
		if m.Type != "bind" {
			continue
		}
		if p == m.Target || strings.HasPrefix(p, strings.TrimSuffix(m.Target, "/")+"/") {
			if best < 0 || len(m.Target) > len(s.Volumes[best].Target) {
				best = i
			}
		}
	}
	if best < 0 {
		return "", fmt.Errorf("%s is not inside any bind mount", p)
	}
	m := s.Volumes[best]
	return filepath.Join(root, m.Source, strings.TrimPrefix(p, m.Target)), nil
}

// containerPorts are the ports the service publishes or exposes, as targets.
func (s *service) containerPorts() []int {
	var ports []int
	for _, p := range s.Ports {
		ports = append(ports, p.Target)
	}
	for _, e := range s.Expose {
		if v, err := strconv.Atoi(strings.TrimSuffix(e, "/tcp")); err == nil {
			ports = append(ports, v)
		}
	}
	return ports
}

func (s *service) port(target int) (portMapping, bool) {
	for _, p := range s.Ports {
		if p.Target == target {
			return p, true
		}
	}
	return portMapping{}, false
}

func TestComposeBindMountsExist(t *testing.T) {
	c := loadCompose(t)
	n := 0
	for name, s := range c.Services {
		for _, m := range s.Volumes {
			switch m.Type {
			case "bind":
				n++
				if filepath.IsAbs(m.Source) || strings.HasPrefix(m.Source, "~") || strings.HasPrefix(filepath.Clean(m.Source), "..") {
					t.Errorf("%s: bind source %q is outside the repository", name, m.Source)
					continue
				}
				if _, err := os.Stat(filepath.Join(root, m.Source)); err != nil {
					t.Errorf("%s: bind source %q: %v", name, m.Source, err)
				}
				if !m.ReadOnly {
					t.Errorf("%s: bind mount %s is writable; the containers only read the repository's files (add :ro)", name, m.Source)
				}
			case "volume":
				if _, ok := c.Volumes[m.Source]; !ok {
					t.Errorf("%s: named volume %q is not declared under top-level volumes", name, m.Source)
				}
			default:
				t.Errorf("%s: mount type %q", name, m.Type)
			}
			if !strings.HasPrefix(m.Target, "/") {
				t.Errorf("%s: mount target %q is not absolute", name, m.Target)
			}
		}
	}
	if n == 0 {
		t.Fatal("no bind mounts found: the parser or the compose file changed")
	}
}

// checkImageRef reports why ref is not pinned: it needs an explicit tag that
// is not "latest", or a digest.
func checkImageRef(ref string) error {
	if ref == "" {
		return fmt.Errorf("empty image reference")
	}
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
			return fmt.Errorf("%s: digest %q is not sha256:<64 hex>", ref, digest)
		}
		return nil
	}
	// The tag follows the last ':' after the last '/' (a registry host may carry a port).
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, ok := strings.Cut(last, ":")
	switch {
	case !ok || tag == "":
		return fmt.Errorf("%s has no tag (it would float on latest)", ref)
	case tag == "latest" || strings.HasPrefix(tag, "latest-") || strings.HasSuffix(tag, "-latest"):
		return fmt.Errorf("%s is not pinned: tag %q floats", ref, tag)
	}
	return nil
}

func TestCheckImageRef(t *testing.T) {
	tests := []struct {
		ref string
		ok  bool
	}{
		{ref: "envoyproxy/envoy:v1.40.0", ok: true},
		{ref: "redis:7.4.2-alpine", ok: true},
		{ref: "registry.example:5000/team/app:1.2.3", ok: true},
		{ref: "redis@sha256:" + strings.Repeat("ab", 32), ok: true},
		{ref: "redis:7.4.2@sha256:" + strings.Repeat("ab", 32), ok: true},
		{ref: "redis", ok: false},
		{ref: "redis:latest", ok: false},
		{ref: "registry.example:5000/app", ok: false},
		{ref: "redis@sha256:abc", ok: false},
		{ref: "", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			if err := checkImageRef(tt.ref); (err == nil) != tt.ok {
				t.Errorf("checkImageRef(%q) = %v; want ok=%v", tt.ref, err, tt.ok)
			}
		})
	}
}

func TestComposeImagesPinned(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		switch {
		case s.Build != nil:
			// Built from this repository's Dockerfile; its FROM lines are checked in dockerfile_test.go.
			if s.Build.Context != "." {
				t.Errorf("%s: build context %q; want the repository (.)", name, s.Build.Context)
			}
			if s.Image != "" {
				if err := checkImageRef(s.Image); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		case s.Image == "":
			t.Errorf("%s: neither image nor build", name)
		default:
			if err := checkImageRef(s.Image); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	}
	// The Envoy image is the release the protos in go.mod come from (envoy/envoy.yaml's header).
	if got := c.svc(t, "envoy").Image; got != "envoyproxy/envoy:v1.40.0" && !strings.HasPrefix(got, "envoyproxy/envoy:v1.40.0@") {
		t.Errorf("envoy image %q; want envoyproxy/envoy:v1.40.0, the release of go-control-plane/envoy v1.40.0", got)
	}
}

func TestComposeDependsOn(t *testing.T) {
	c := loadCompose(t)
	conditions := []string{"service_started", "service_healthy", "service_completed_successfully"}
	n := 0
	for name, s := range c.Services {
		for dep, d := range s.DependsOn {
			n++
			target, ok := c.Services[dep]
			if !ok {
				t.Errorf("%s depends on %q, which is not a service", name, dep)
				continue
			}
			if !slices.Contains(conditions, d.Condition) {
				t.Errorf("%s → %s: condition %q; want one of %v", name, dep, d.Condition, conditions)
			}
			if d.Condition == "service_healthy" {
				hc := target.Healthcheck
				if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
					t.Errorf("%s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no depends_on found: the parser or the compose file changed")
	}
	// Start order the stack relies on.
	for _, tt := range []struct{ from, to string }{{"envoy", "sluice"}, {"envoy", "app"}, {"sluice", "redis"}} {
		if d, ok := c.svc(t, tt.from).DependsOn[tt.to]; !ok || d.Condition != "service_healthy" {
			t.Errorf("%s should wait for %s to be healthy (depends_on condition service_healthy)", tt.from, tt.to)
		}
	}
}

func TestComposeHealthchecks(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		hc := s.Healthcheck
		if hc == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if len(hc.Test) < 2 || (hc.Test[0] != "CMD" && hc.Test[0] != "CMD-SHELL") {
				t.Fatalf("test %q: want [CMD, ...] or [CMD-SHELL, ...]", hc.Test)
			}
			for _, d := range []string{hc.Interval, hc.Timeout, hc.StartPeriod} {
				if d == "" {
					continue
				}
				if _, err := time.ParseDuration(d); err != nil {
					t.Errorf("duration %q: %v", d, err)
				}
			}
			if s.Build != nil && hc.Test[0] != "CMD" {
				t.Errorf("image built from the Dockerfile is distroless (no shell); use CMD, not %s", hc.Test[0])
			}
		})
	}
}

// sluiceFlags are the flags `sluice serve` accepts that decide its config
// (cmd/sluice/main.go, common.register); the compose command is parsed with
// them so an unknown flag fails here as it would in the container.
type sluiceFlags struct {
	config, grpcAddr, adminAddr, rlConfig, redisURL string
}

func parseSluiceCommand(t *testing.T, s *service) sluiceFlags {
	t.Helper()
	if len(s.Command) == 0 || s.Command[0] != "serve" {
		t.Fatalf("sluice command %q; want serve ...", s.Command)
	}
	var f sluiceFlags
	fs := flag.NewFlagSet("sluice serve", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	fs.StringVar(&f.config, "config", s.Environment["SLUICE_CONFIG"], "")
	fs.StringVar(&f.grpcAddr, "grpc-addr", "", "")
	fs.StringVar(&f.adminAddr, "admin-addr", "", "")
	fs.StringVar(&f.rlConfig, "ratelimit-config", "", "")
	fs.StringVar(&f.redisURL, "redis-url", s.Environment["REDIS_URL"], "")
	if err := fs.Parse(s.Command[1:]); err != nil {
		t.Fatalf("sluice command %q: %v", s.Command, err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("sluice serve takes no arguments; got %q", fs.Args())
	}
	return f
}

// sluiceConfig loads the config the compose `sluice` service runs with: the
// mounted config file, then the command's flags, as cmd/sluice does.
func sluiceConfig(t *testing.T, c *compose) (config.Config, sluiceFlags) {
	t.Helper()
	s := c.svc(t, "sluice")
	f := parseSluiceCommand(t, s)
	if f.config == "" {
		t.Fatal("the sluice service runs without --config")
	}
	host, err := s.hostPath(f.config)
	if err != nil {
		t.Fatalf("--config %s: %v", f.config, err)
	}
	// The same flag-over-file rule as cmd/sluice.
	cfg, err := config.Load(host, config.Overrides{GRPCAddr: f.grpcAddr, AdminAddr: f.adminAddr, RateLimitConfig: f.rlConfig, RedisURL: f.redisURL})
	if err != nil {
		t.Fatalf("%s with the compose flags does not validate: %v", host, err)
	}
	return cfg, f
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

func TestComposeSluiceConfig(t *testing.T) {
	c := loadCompose(t)
	s := c.svc(t, "sluice")
	cfg, f := sluiceConfig(t, c)

	t.Run("rules", func(t *testing.T) {
		if f.rlConfig == "" && cfg.RateLimit.ConfigPath == "" {
			t.Fatal("the sluice service has no rate limit rules (--ratelimit-config)")
		}
		host, err := s.hostPath(cfg.RateLimit.ConfigPath)
		if err != nil {
			t.Fatalf("rules %s: %v", cfg.RateLimit.ConfigPath, err)
		}
		rules, err := ratelimitsvc.LoadRules(host)
		if err != nil {
			t.Fatalf("ratelimitsvc.LoadRules(%s): %v", host, err)
		}
		settings, err := envoy.ParseSettings(envoyConfig(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if d := settings.RateLimit.GetDomain(); !slices.Contains(rules.Domains(), d) {
			t.Errorf("envoy.yaml's ratelimit filter asks for domain %q; the rules have %v", d, rules.Domains())
		}
	})

	t.Run("defaults", func(t *testing.T) {
		// The compose stack uses Sluice's default ports, so the docs' numbers hold everywhere;
		// it binds them on every interface of its container (Envoy and Prometheus are other
		// containers), where Sluice's defaults are loopback only.
		def := config.Config{}.WithDefaults()
		if port(t, cfg.Server.GRPCAddr) != port(t, def.Server.GRPCAddr) || port(t, cfg.Server.AdminAddr) != port(t, def.Server.AdminAddr) {
			t.Errorf("compose runs sluice on grpc %s, admin %s; the default ports are those of %s, %s",
				cfg.Server.GRPCAddr, cfg.Server.AdminAddr, def.Server.GRPCAddr, def.Server.AdminAddr)
		}
		if def.Server.GRPCAddr != "127.0.0.1:8081" || def.Server.AdminAddr != "127.0.0.1:9091" {
			t.Errorf("Sluice's default addresses changed to %s, %s: update docker-compose.yaml, the Dockerfile's EXPOSE and deploy/README.md",
				def.Server.GRPCAddr, def.Server.AdminAddr)
		}
	})

	t.Run("ports", func(t *testing.T) {
		for _, addr := range []string{cfg.Server.GRPCAddr, cfg.Server.AdminAddr} {
			p, ok := s.port(port(t, addr))
			if !ok {
				t.Errorf("sluice listens on %s but compose does not map that port", addr)
				continue
			}
			if p.HostIP != "127.0.0.1" {
				t.Errorf("sluice port %d is published on %q; keep it on 127.0.0.1 (the admin port serves /debug)", p.Target, p.HostIP)
			}
		}
	})

	t.Run("redis", func(t *testing.T) {
		u, err := url.Parse(cfg.Redis.URL)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := c.Services[u.Hostname()]
		if !ok {
			t.Fatalf("redis URL %s names host %q, which is not a compose service", cfg.Redis.URL, u.Hostname())
		}
		p := u.Port()
		if p == "" {
			p = "6379"
		}
		n, _ := strconv.Atoi(p)
		if !slices.Contains(r.containerPorts(), n) {
			t.Errorf("redis URL port %d is not among %s's ports %v", n, u.Hostname(), r.containerPorts())
		}
	})

	t.Run("batch listener", func(t *testing.T) {
		// Batch items go back through Envoy's internal listener: the envoy service on that
		// listener's port, which limits each item as the batch's client.
		u, err := url.Parse(cfg.Batch.ListenerURL)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := envoy.ParseListeners(envoyConfig(t, c))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("envoy:%d", port(t, envoy.Find(ls, envoy.InternalListener).Address)); u.Host != want {
			t.Errorf("batch.listener_url %s; want http://%s (the envoy service's internal listener)", cfg.Batch.ListenerURL, want)
		}
		if _, ok := c.Services[u.Hostname()]; !ok {
			t.Errorf("batch.listener_url host %q is not a compose service", u.Hostname())
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		hc := s.Healthcheck
		if hc == nil {
			t.Fatal("sluice has no healthcheck")
		}
		want := fmt.Sprintf("http://127.0.0.1:%d/readyz", port(t, cfg.Server.AdminAddr))
		if !slices.Contains(hc.Test, want) {
			t.Errorf("healthcheck %q does not probe %s", hc.Test, want)
		}
	})

	t.Run("stop grace", func(t *testing.T) {
		d, err := time.ParseDuration(s.StopGracePeriod)
		if err != nil {
			t.Fatalf("stop_grace_period %q: %v", s.StopGracePeriod, err)
		}
		if d <= cfg.Server.ShutdownGrace {
			t.Errorf("stop_grace_period %v is not longer than server.shutdown_grace %v: Docker would SIGKILL mid-drain", d, cfg.Server.ShutdownGrace)
		}
	})
}

// envoyConfig reads the bootstrap the compose envoy service runs (its -c file).
func envoyConfig(t *testing.T, c *compose) []byte {
	t.Helper()
	s := c.svc(t, "envoy")
	i := slices.Index(s.Command, "-c")
	if i < 0 || i+1 >= len(s.Command) {
		t.Fatalf("envoy command %q has no -c <config>", s.Command)
	}
	host, err := s.hostPath(s.Command[i+1])
	if err != nil {
		t.Fatalf("envoy -c %s: %v", s.Command[i+1], err)
	}
	data, err := os.ReadFile(host)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// demoListenPort is the port the app service's demoapi listens on (-listen).
func demoListenPort(t *testing.T, s *service) int {
	t.Helper()
	fs := flag.NewFlagSet("demoapi", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	listen := fs.String("listen", ":8000", "") // cmd/demoapi's default
	fs.String("seed", "", "")
	fs.Duration("shutdown-grace", 0, "")
	if err := fs.Parse(s.Command); err != nil {
		t.Fatalf("app command %q: %v", s.Command, err)
	}
	return port(t, *listen)
}

func TestComposeMatchesEnvoy(t *testing.T) {
	c := loadCompose(t)
	data := envoyConfig(t, c)
	if !bytes.Equal(data, envoy.DefaultConfig) {
		t.Error("compose mounts a different file than envoy/envoy.yaml (the one the emulator and tests use)")
	}
	b, err := envoy.LoadBootstrap(data)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := envoy.ParseListeners(data)
	if err != nil {
		t.Fatal(err)
	}
	settings := envoy.Find(ls, envoy.IngressListener)
	e := c.svc(t, "envoy")

	listener := port(t, settings.Address)
	internal := port(t, envoy.Find(ls, envoy.InternalListener).Address)
	stats := port(t, envoy.Find(ls, envoy.StatsListener).Address)
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	if listener != 8080 || internal != 8082 || stats != 9902 || admin.GetPortValue() != 9901 {
		t.Errorf("envoy.yaml listens on %d, %d, %d (admin %d); the stack documents 8080, 8082, 9902 (admin 9901)", listener, internal, stats, admin.GetPortValue())
	}
	if p, ok := e.port(listener); !ok || p.Published != listener {
		t.Errorf("envoy's listener port %d is not published as %d", listener, listener)
	}
	if p, ok := e.port(stats); !ok || p.Published != stats || p.HostIP != "127.0.0.1" {
		t.Errorf("envoy's stats port %d: want it published as 127.0.0.1:%d:%d, got %+v", stats, stats, stats, p)
	}
	if p, ok := e.port(internal); ok && p.Published != 0 {
		t.Errorf("envoy's internal listener %d is published (%+v): whoever reaches it chooses the client address it is limited as", internal, p)
	}
	if !slices.Contains(e.containerPorts(), internal) {
		t.Errorf("envoy does not declare its internal listener port %d (expose), which Sluice dials", internal)
	}
	if admin.GetAddress() != "127.0.0.1" {
		t.Errorf("envoy's admin interface listens on %q; want 127.0.0.1", admin.GetAddress())
	}
	if p, ok := e.port(int(admin.GetPortValue())); ok {
		t.Errorf("envoy's admin port is published (%+v): it listens on the container's loopback", p)
	}

	cfg, _ := sluiceConfig(t, c)
	wantPort := map[string]int{
		"sluice": port(t, cfg.Server.GRPCAddr),
		"app":    demoListenPort(t, c.svc(t, "app")),
	}
	if settings.Clusters["sluice"] != "sluice:8081" || settings.Clusters["app"] != "app:8000" {
		t.Errorf("envoy clusters %v; want sluice at sluice:8081 and app at app:8000", settings.Clusters)
	}
	for cluster, addr := range settings.Clusters {
		if cluster == "envoy_admin" {
			continue // Envoy's own admin interface, for the stats listener
		}
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := c.Services[host]
		if !ok {
			t.Errorf("envoy cluster %s points at %s, which is not a compose service", cluster, addr)
			continue
		}
		n, _ := strconv.Atoi(p)
		if !slices.Contains(s.containerPorts(), n) {
			t.Errorf("envoy cluster %s points at port %d; service %s declares %v", cluster, n, host, s.containerPorts())
		}
		if want, ok := wantPort[host]; ok && want != n {
			t.Errorf("envoy cluster %s points at %s:%d, but %s listens on %d", cluster, host, n, host, want)
		}
		if d, ok := e.DependsOn[host]; !ok || d.Condition != "service_healthy" {
			t.Errorf("envoy does not wait for %s (cluster %s) to be healthy", host, cluster)
		}
	}
	if hc := c.svc(t, "app").Healthcheck; hc == nil || !slices.Contains(hc.Test, fmt.Sprintf("http://127.0.0.1:%d/healthz", wantPort["app"])) {
		t.Errorf("app healthcheck %v does not probe its own /healthz on %d", hc, wantPort["app"])
	}
}

// workerFlags are the `sluice worker` settings (cmd/sluice/worker.go) the
// compose service decides: flags, else their environment variables, else the
// worker's defaults.
type workerFlags struct {
	adminAddr, databaseURL, redisURL, keyPrefix, envoyURL, tenants, tenantHeader string
}

func parseWorkerCommand(t *testing.T, s *service) workerFlags {
	t.Helper()
	if len(s.Command) == 0 || s.Command[0] != "worker" {
		t.Fatalf("worker command %q; want worker ...", s.Command)
	}
	env := func(k, def string) string {
		if v, ok := s.Environment[k]; ok {
			return v
		}
		return def
	}
	var f workerFlags
	fs := flag.NewFlagSet("sluice worker", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	fs.StringVar(&f.adminAddr, "admin-addr", env("WORKER_ADMIN_ADDR", "127.0.0.1:9091"), "")
	fs.StringVar(&f.databaseURL, "database-url", env("DATABASE_URL", ""), "")
	fs.StringVar(&f.redisURL, "redis-url", env("REDIS_URL", ""), "")
	fs.StringVar(&f.keyPrefix, "redis-key-prefix", env("REDIS_KEY_PREFIX", "sluice:"), "")
	fs.StringVar(&f.envoyURL, "envoy-url", env("ENVOY_URL", ""), "")
	fs.StringVar(&f.tenants, "warm-tenants", env("WARM_TENANTS", ""), "")
	fs.StringVar(&f.tenantHeader, "warm-tenant-header", env("WARM_TENANT_HEADER", "x-tenant-id"), "")
	if err := fs.Parse(s.Command[1:]); err != nil {
		t.Fatalf("worker command %q: %v (a flag missing here must be added to parseWorkerCommand)", s.Command, err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("the long-running worker takes no arguments; got %q", fs.Args())
	}
	return f
}

// TestComposeWorker checks the worker service: its own health endpoint and
// healthcheck (the image's HEALTHCHECK is serve's), warming actually
// configured against the stack's Redis, Envoy and tenants, and Prometheus
// scraping it.
func TestComposeWorker(t *testing.T) {
	c := loadCompose(t)
	w := c.svc(t, "worker")
	f := parseWorkerCommand(t, w)
	cfg, _ := sluiceConfig(t, c)

	t.Run("healthcheck", func(t *testing.T) {
		hc := w.Healthcheck
		if hc == nil || len(hc.Test) == 0 {
			t.Fatal("worker has no healthcheck of its own: it would inherit the image's, which probes serve's /readyz")
		}
		want := fmt.Sprintf("http://127.0.0.1:%d/readyz", port(t, f.adminAddr))
		if !slices.Equal(hc.Test, []string{"CMD", "/usr/local/bin/healthprobe", want}) {
			t.Errorf("worker healthcheck %q; want [CMD /usr/local/bin/healthprobe %s] (the worker's admin address is %s)", hc.Test, want, f.adminAddr)
		}
		// Migrations (indexes built CONCURRENTLY) run before the worker is ready.
		if d, err := time.ParseDuration(hc.StartPeriod); err != nil || d < 30*time.Second {
			t.Errorf("worker healthcheck start_period %q; want at least 30s for migrations", hc.StartPeriod)
		}
	})

	t.Run("warming", func(t *testing.T) {
		if f.redisURL == "" || f.envoyURL == "" {
			t.Fatalf("worker has REDIS_URL %q and ENVOY_URL %q: without both it never warms", f.redisURL, f.envoyURL)
		}
		if f.redisURL != cfg.Redis.URL || f.keyPrefix != cfg.Redis.KeyPrefix {
			t.Errorf("worker reads the cache at %s prefix %q; sluice writes it at %s prefix %q", f.redisURL, f.keyPrefix, cfg.Redis.URL, cfg.Redis.KeyPrefix)
		}
		// Envoy's internal listener, as batch items: the client-facing one strips the warming
		// marker (internal/warm.DefaultEnvoyURL; docs/security.md, the checklist).
		listeners, err := envoy.ParseListeners(envoyConfig(t, c))
		if err != nil {
			t.Fatal(err)
		}
		internal := envoy.Find(listeners, envoy.InternalListener)
		if internal == nil {
			t.Fatal("envoy.yaml has no internal listener")
		}
		if want := fmt.Sprintf("http://envoy:%d", port(t, internal.Address)); strings.TrimSuffix(f.envoyURL, "/") != want {
			t.Errorf("worker ENVOY_URL %s; want %s (the envoy service's internal listener)", f.envoyURL, want)
		}
		var tenants []string
		for tn := range strings.SplitSeq(f.tenants, ",") {
			if tn = strings.TrimSpace(tn); tn != "" {
				tenants = append(tenants, tn)
			}
		}
		if len(tenants) == 0 {
			t.Error("worker has no WARM_TENANTS: warming would refuse to start")
		}
		for _, tn := range tenants {
			if _, ok := cfg.ExtProc.Identity.Tiers[tn]; !ok {
				t.Errorf("warm tenant %q is not in the stack's tier map %v", tn, cfg.ExtProc.Identity.Tiers)
			}
		}
		if !strings.EqualFold(f.tenantHeader, cfg.ExtProc.Identity.TenantHeader) {
			t.Errorf("warming sends the tenant in %q; sluice reads %q", f.tenantHeader, cfg.ExtProc.Identity.TenantHeader)
		}
		for dep, cond := range map[string]string{"postgres": "service_healthy", "redis": "service_healthy", "envoy": "service_started"} {
			if d, ok := w.DependsOn[dep]; !ok || d.Condition != cond {
				t.Errorf("worker depends_on %s: %+v; want condition %s", dep, d, cond)
			}
		}
	})

	t.Run("scraped", func(t *testing.T) {
		if host, _, _ := net.SplitHostPort(f.adminAddr); host == "127.0.0.1" || host == "localhost" {
			t.Fatalf("worker admin address %s is loopback: Prometheus (another container) cannot scrape it", f.adminAddr)
		}
		if !slices.Contains(w.containerPorts(), port(t, f.adminAddr)) {
			t.Errorf("worker does not expose its admin port %d (ports %v)", port(t, f.adminAddr), w.containerPorts())
		}
		var pc promConfig
		decodeStrict(t, readRepoFile(t, "deploy", "prometheus", "prometheus.yml"), &pc, "prometheus.yml")
		want := net.JoinHostPort("worker", strconv.Itoa(port(t, f.adminAddr)))
		found := false
		for _, sc := range pc.ScrapeConfigs {
			for _, s := range sc.StaticConfigs {
				if slices.Contains(s.Targets, want) && (sc.MetricsPath == "" || sc.MetricsPath == "/metrics") {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("deploy/prometheus/prometheus.yml scrapes no %s/metrics", want)
		}
	})
}

// TestComposeOneVersion: every image built from this repository carries the
// same VERSION build argument, so `sluice_build_info` and `sluice version`
// agree across the stack's containers.
func TestComposeOneVersion(t *testing.T) {
	c := loadCompose(t)
	versions := map[string][]string{}
	for name, s := range c.Services {
		if s.Build == nil {
			continue
		}
		v, ok := s.Build.Args["VERSION"]
		if !ok || v == "" {
			t.Errorf("%s: build without a VERSION arg (the Dockerfile would stamp it %q)", name, "dev")
		}
		versions[v] = append(versions[v], name)
	}
	if len(versions) != 1 {
		t.Errorf("services built from the Dockerfile carry different VERSIONs: %v", versions)
	}
}
