package kubernetes

import (
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

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwapiv1b1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/envoy/emulator"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/ratelimitsvc"
)

// pod is a pod template of a rendered workload.
type pod struct {
	owner     *object
	namespace string
	labels    map[string]string
	spec      *corev1.PodSpec
}

func pods(t *testing.T, objs []*object) []pod {
	t.Helper()
	var out []pod
	for _, o := range ofKind(objs, "Deployment") {
		d := decodeAs[*appsv1.Deployment](t, o)
		out = append(out, pod{owner: o, namespace: o.Namespace, labels: d.Spec.Template.Labels, spec: &d.Spec.Template.Spec})
	}
	return out
}

// selected returns the pods of a namespace a selector selects.
func selected(ps []pod, namespace string, sel labels.Selector) []pod {
	var out []pod
	for _, p := range ps {
		if p.namespace == namespace && sel.Matches(labels.Set(p.labels)) {
			out = append(out, p)
		}
	}
	return out
}

func labelSelector(t *testing.T, where string, s *metav1.LabelSelector) labels.Selector {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if sel.Empty() {
		t.Errorf("%s: empty selector selects everything", where)
	}
	return sel
}

// containerPort resolves a port (a name or a number) among a pod's containers.
func containerPort(p pod, port intstr.IntOrString) (int32, bool) {
	for _, c := range append(slices.Clone(p.spec.Containers), p.spec.InitContainers...) {
		for _, cp := range c.Ports {
			if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func container(p pod, name string) *corev1.Container {
	for i := range p.spec.Containers {
		if p.spec.Containers[i].Name == name {
			return &p.spec.Containers[i]
		}
	}
	return nil
}

// checkImageRef reports why ref is not pinned: it needs a tag that is not
// "latest", or a digest.
func checkImageRef(ref string) error {
	if _, digest, ok := strings.Cut(ref, "@"); ok {
		if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
			return fmt.Errorf("%s: digest %q is not sha256:<64 hex>", ref, digest)
		}
		return nil
	}
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

// configMapData returns the data of the rendered ConfigMap a volume names.
func configMapData(t *testing.T, objs []*object, namespace, name string) map[string]string {
	t.Helper()
	for _, o := range ofKind(objs, "ConfigMap") {
		if o.Namespace == namespace && o.Name == name {
			return decodeAs[*corev1.ConfigMap](t, o).Data
		}
	}
	t.Fatalf("ConfigMap %s/%s is not rendered", namespace, name)
	return nil
}

// mounted returns the ConfigMap data a container sees at path (a file or
// directory under a configMap volume mount) and the key, "" for the directory.
func mounted(t *testing.T, objs []*object, p pod, c *corev1.Container, path string) (data map[string]string, key string, m corev1.VolumeMount) {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range p.spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil {
				if rel == "." {
					rel = ""
				}
				return configMapData(t, objs, p.namespace, v.ConfigMap.Name), rel, vm
			}
		}
	}
	t.Fatalf("%s: %s is not inside a configMap volume mount of container %s", p.owner, path, c.Name)
	return nil, "", corev1.VolumeMount{}
}

// envValue returns a container's plain (not secret) environment value, from
// env or an envFrom ConfigMap.
func envValue(t *testing.T, objs []*object, p pod, c *corev1.Container, name string) (string, bool) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			if v, ok := configMapData(t, objs, p.namespace, ef.ConfigMapRef.Name)[name]; ok {
				return v, true
			}
		}
	}
	return "", false
}

// served is what a `sluice serve` container runs with.
type served struct {
	cfg    config.Config
	raw    map[string]any // the config file as written
	pod    pod
	c      *corev1.Container
	config string // --config path
}

// sluiceServe loads the config of the `sluice` container of a Deployment the
// way cmd/sluice does: the mounted --config file, then the flags.
func sluiceServe(t *testing.T, objs []*object, dep *object) served {
	t.Helper()
	var p pod
	for _, q := range pods(t, objs) {
		if q.owner == dep {
			p = q
		}
	}
	c := container(p, "sluice")
	if c == nil || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("%s: no container sluice running serve", dep)
	}
	var configPath, grpcAddr, adminAddr, rules, tokenFile string
	fs := flag.NewFlagSet("sluice serve", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	fs.StringVar(&configPath, "config", "", "")
	fs.StringVar(&grpcAddr, "grpc-addr", "", "")
	fs.StringVar(&adminAddr, "admin-addr", "", "")
	fs.StringVar(&rules, "ratelimit-config", "", "")
	fs.StringVar(&tokenFile, "admin-token-file", "", "")
	if err := fs.Parse(c.Args[1:]); err != nil {
		t.Fatalf("%s: sluice args %q: %v (secrets such as --redis-url never go on the command line)", dep, c.Args, err)
	}
	if configPath == "" {
		t.Fatalf("%s: sluice runs without --config", dep)
	}
	data, key, _ := mounted(t, objs, p, c, configPath)
	text, ok := data[key]
	if !ok {
		t.Fatalf("%s: --config %s: the ConfigMap has no key %q", dep, configPath, key)
	}
	f := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f, config.Overrides{})
	if err != nil {
		t.Fatalf("%s: %v", dep, err)
	}
	// REDIS_URL (and SLUICE_ADMIN_TOKEN) come from the Secret at run time
	// (TestSecretsOnlyFromSecrets checks they do).
	ov := config.Overrides{GRPCAddr: grpcAddr, AdminAddr: adminAddr, RateLimitConfig: rules, AdminTokenFile: tokenFile, RedisURL: "redis://from-the-secret:6379/0"}
	if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "SLUICE_ADMIN_TOKEN" }) {
		ov.AdminToken = "from-the-secret-0123456789abcdef"
	}
	cfg = ov.Apply(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: the mounted config with the container's flags does not validate: %v", dep, err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		t.Fatal(err)
	}
	return served{cfg: cfg, raw: raw, pod: p, c: c, config: configPath}
}

// sluiceRules loads the rate limit rules a `sluice serve` container reads.
func sluiceRules(t *testing.T, objs []*object, dep *object) *ratelimitsvc.Rules {
	t.Helper()
	s := sluiceServe(t, objs, dep)
	data, key, vm := mounted(t, objs, s.pod, s.c, s.cfg.RateLimit.ConfigPath)
	if vm.SubPath != "" {
		t.Errorf("%s: the rules are mounted with subPath %s: the kubelet never updates such a mount, so hot reload would not see edits", dep, vm.SubPath)
	}
	dir := t.TempDir()
	for k, v := range data {
		if key == "" || k == key {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := dir
	if key != "" {
		path = filepath.Join(dir, key)
	}
	rules, err := ratelimitsvc.LoadRules(path)
	if err != nil {
		t.Fatalf("%s: rules at %s: %v", dep, s.cfg.RateLimit.ConfigPath, err)
	}
	return rules
}

// descriptor builds the descriptor entries Envoy's rate_limits entry sends
// for a request with these headers (request_headers actions only).
func descriptor(t *testing.T, rl *routev3.RateLimit, headers map[string]string) []ratelimitsvc.Entry {
	t.Helper()
	var out []ratelimitsvc.Entry
	for _, a := range rl.GetActions() {
		rh := a.GetRequestHeaders()
		if rh == nil {
			t.Fatalf("action %v: only request_headers is simulated", a)
		}
		out = append(out, ratelimitsvc.Entry{Key: rh.GetDescriptorKey(), Value: headers[rh.GetHeaderName()]})
	}
	return out
}

func portOf(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return host, n
}

func loopback(host string) bool { return host == "localhost" || net.ParseIP(host).IsLoopback() }

// checkServiceAddress checks that host (<svc>.<ns>.svc.cluster.local, or
// <svc>.<ns>) names a rendered Service with that port, whose target port
// some selected pod declares; headless: the Service must be (a STRICT_DNS
// cluster then sees every pod).
func checkServiceAddress(t *testing.T, objs []*object, host string, port int, headless bool) {
	t.Helper()
	parts := strings.Split(host, ".")
	if len(parts) < 2 {
		t.Errorf("%s: want <service>.<namespace>[.svc.cluster.local]", host)
		return
	}
	checkService(t, objs, parts[1], parts[0], port, headless)
}

func checkService(t *testing.T, objs []*object, namespace, name string, port int, headless bool) {
	t.Helper()
	for _, o := range ofKind(objs, "Service") {
		if o.Namespace != namespace || o.Name != name {
			continue
		}
		svc := decodeAs[*corev1.Service](t, o)
		if headless && svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s is called through a STRICT_DNS cluster but is not headless: Envoy would see one address", o)
		}
		sel := labelSelector(t, o.String(), &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
		for _, sp := range svc.Spec.Ports {
			if int(sp.Port) != port {
				continue
			}
			ps := selected(pods(t, objs), namespace, sel)
			if len(ps) == 0 {
				t.Errorf("%s selects no pod", o)
			}
			for _, p := range ps {
				if _, ok := containerPort(p, sp.TargetPort); !ok {
					t.Errorf("%s port %d targets %s, which %s does not declare", o, port, sp.TargetPort.String(), p.owner)
				}
			}
			return
		}
		t.Errorf("%s has no port %d", o, port)
		return
	}
	t.Errorf("no Service %s/%s is rendered", namespace, name)
}

func referenceGranted(t *testing.T, objs []*object, fromNS, toNS, service string) bool {
	t.Helper()
	for _, o := range ofKind(objs, "ReferenceGrant") {
		if o.Namespace != toNS {
			continue
		}
		g := decodeAs[*gwapiv1b1.ReferenceGrant](t, o)
		from, to := false, false
		for _, f := range g.Spec.From {
			from = from || (f.Group == egv1a1.GroupName && f.Kind == egv1a1.KindEnvoyExtensionPolicy && string(f.Namespace) == fromNS)
		}
		for _, r := range g.Spec.To {
			to = to || (r.Group == "" && r.Kind == "Service" && (r.Name == nil || string(*r.Name) == service))
		}
		if from && to {
			return true
		}
	}
	return false
}

// TestWorkloads checks every rendered workload the way a reviewer would:
// pinned images, non-root and read-only, resources, probes on declared
// ports, and selectors that select.
func TestWorkloads(t *testing.T) {
	for _, name := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			objs := render(t, name)
			all := pods(t, objs)
			for _, p := range all {
				d := decodeAs[*appsv1.Deployment](t, p.owner)
				if sel := labelSelector(t, p.owner.String(), d.Spec.Selector); !sel.Matches(labels.Set(p.labels)) {
					t.Errorf("%s: selector %s does not select its own pod template %v", p.owner, sel, p.labels)
				}
				if sc := p.spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
					t.Errorf("%s: pod securityContext.runAsNonRoot is not true", p.owner)
				}
				if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
					t.Errorf("%s: mounts a service account token it has no use for", p.owner)
				}
				for _, tsc := range p.spec.TopologySpreadConstraints {
					if !labelSelector(t, p.owner.String(), tsc.LabelSelector).Matches(labels.Set(p.labels)) {
						t.Errorf("%s: topology spread over %s does not count its own pods", p.owner, tsc.TopologyKey)
					}
				}
				for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
					where := fmt.Sprintf("%s container %s", p.owner, c.Name)
					if err := checkImageRef(c.Image); err != nil {
						t.Errorf("%s: %v", where, err)
					}
					sc := c.SecurityContext
					if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
						sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
						sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
						t.Errorf("%s: want readOnlyRootFilesystem, no privilege escalation, capabilities drop ALL", where)
					}
					if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
						t.Errorf("%s: want cpu and memory requests and a memory limit", where)
					}
				}
				for _, c := range p.spec.Containers {
					where := fmt.Sprintf("%s container %s", p.owner, c.Name)
					for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
						if pr == nil {
							t.Errorf("%s: no %s probe", where, kind)
							continue
						}
						var port intstr.IntOrString
						switch {
						case pr.HTTPGet != nil:
							port = pr.HTTPGet.Port
						case pr.TCPSocket != nil:
							port = pr.TCPSocket.Port
						case pr.GRPC != nil:
							port = intstr.FromInt32(pr.GRPC.Port)
						default:
							t.Errorf("%s: %s probe is neither httpGet, tcpSocket nor grpc", where, kind)
							continue
						}
						if _, ok := containerPort(pod{spec: &corev1.PodSpec{Containers: []corev1.Container{c}}}, port); !ok {
							t.Errorf("%s: %s probe on port %s, which the container does not declare", where, kind, port.String())
						}
					}
				}
			}
			for _, o := range ofKind(objs, "Service") {
				svc := decodeAs[*corev1.Service](t, o)
				sel := labelSelector(t, o.String(), &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
				ps := selected(all, o.Namespace, sel)
				if len(ps) == 0 {
					t.Errorf("%s selects no rendered pod", o)
				}
				for _, sp := range svc.Spec.Ports {
					for _, p := range ps {
						if _, ok := containerPort(p, sp.TargetPort); !ok {
							t.Errorf("%s port %s targets %s, which %s does not declare", o, sp.Name, sp.TargetPort.String(), p.owner)
						}
					}
				}
			}
			for _, o := range ofKind(objs, "PodDisruptionBudget") {
				pdb := decodeAs[*policyv1.PodDisruptionBudget](t, o)
				if len(selected(all, o.Namespace, labelSelector(t, o.String(), pdb.Spec.Selector))) == 0 {
					t.Errorf("%s selects no rendered pod", o)
				}
			}
			for _, o := range ofKind(objs, "HorizontalPodAutoscaler") {
				h := decodeAs[*autoscalingv2.HorizontalPodAutoscaler](t, o)
				ref := h.Spec.ScaleTargetRef
				found := false
				for _, p := range all {
					found = found || (p.owner.Kind == ref.Kind && p.owner.Name == ref.Name && p.owner.Namespace == o.Namespace)
				}
				if !found {
					t.Errorf("%s scales %s %s, which is not rendered", o, ref.Kind, ref.Name)
				}
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
					t.Errorf("%s: minReplicas below 2 leaves no pod serving while one drains", o)
				}
				for _, p := range all {
					if p.owner.Name == ref.Name {
						if d := decodeAs[*appsv1.Deployment](t, p.owner); d.Spec.Replicas != nil {
							t.Errorf("%s sets replicas, which every apply would reset under the autoscaler", p.owner)
						}
					}
				}
			}
			for _, o := range ofKind(objs, "NetworkPolicy") {
				np := decodeAs[*networkingv1.NetworkPolicy](t, o)
				// Envoy Gateway's Envoy pods are not rendered here: egPods stands in for them.
				ps := selected(append(slices.Clone(all), egPods(t, objs)...), o.Namespace, labelSelector(t, o.String(), &np.Spec.PodSelector))
				if len(ps) == 0 {
					t.Errorf("%s selects no rendered pod", o)
				}
				for _, rule := range np.Spec.Ingress {
					for _, port := range rule.Ports {
						for _, p := range ps {
							if _, ok := containerPort(p, *port.Port); !ok {
								t.Errorf("%s admits port %s, which %s does not declare", o, port.Port.String(), p.owner)
							}
						}
					}
				}
			}
			for _, o := range ofKind(objs, "ServiceMonitor") {
				sm := decodeAs[*monitoringv1.ServiceMonitor](t, o)
				sel := labelSelector(t, o.String(), &sm.Spec.Selector)
				var svcs []*corev1.Service
				for _, so := range ofKind(objs, "Service") {
					svc := decodeAs[*corev1.Service](t, so)
					if so.Namespace == o.Namespace && sel.Matches(labels.Set(svc.Labels)) {
						svcs = append(svcs, svc)
					}
				}
				if len(svcs) == 0 {
					t.Errorf("%s selects no rendered Service", o)
				}
				for _, ep := range sm.Spec.Endpoints {
					for _, svc := range svcs {
						if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
							t.Errorf("%s scrapes port %q, which Service %s does not name", o, ep.Port, svc.Name)
						}
					}
				}
			}
		})
	}
}

// TestSecretsOnlyFromSecrets: the Redis and PostgreSQL URLs reach every
// container as environment from the Secret, never as a flag, an argument or a
// plain value.
func TestSecretsOnlyFromSecrets(t *testing.T) {
	secret := []string{"REDIS_URL", "DATABASE_URL", "DATABASE_READ_URL", "SLUICE_ADMIN_TOKEN"}
	for _, name := range overlays(t) {
		objs := render(t, name)
		n := 0
		for _, p := range pods(t, objs) {
			for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
				for _, a := range append(slices.Clone(c.Command), c.Args...) {
					if strings.Contains(a, "redis://") || strings.Contains(a, "rediss://") || strings.Contains(a, "postgres://") || strings.Contains(a, "postgresql://") ||
						strings.HasPrefix(a, "--redis-url") || strings.HasPrefix(a, "--database-url") {
						t.Errorf("%s container %s: %q on the command line", p.owner, c.Name, a)
					}
				}
				for _, e := range c.Env {
					if !slices.Contains(secret, e.Name) {
						continue
					}
					n++
					if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != e.Name {
						t.Errorf("%s container %s: %s is not taken from a Secret's key of that name", p.owner, c.Name, e.Name)
					}
				}
				for _, ef := range c.EnvFrom {
					if ef.ConfigMapRef != nil {
						for k := range configMapData(t, objs, p.namespace, ef.ConfigMapRef.Name) {
							if slices.Contains(secret, k) {
								t.Errorf("%s container %s: %s comes from ConfigMap %s", p.owner, c.Name, k, ef.ConfigMapRef.Name)
							}
						}
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no container takes REDIS_URL or DATABASE_URL from the Secret", name)
		}
	}
}

// TestSluiceAgreesWithItsConfig: the ports, probes and shutdown of the
// `sluice` Deployment follow the config it runs, and its rules load.
func TestSluiceAgreesWithItsConfig(t *testing.T) {
	domain := loadReference(t).rateLimit
	for _, name := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			objs := render(t, name)
			dep := one(t, objs, "Deployment", "sluice")
			s := sluiceServe(t, objs, dep)
			grpcHost, grpcPort := portOf(t, s.cfg.Server.GRPCAddr)
			adminHost, adminPort := portOf(t, s.cfg.Server.AdminAddr)
			for portName, want := range map[string]int{"grpc": grpcPort, "admin": adminPort} {
				if got, ok := containerPort(s.pod, intstr.FromString(portName)); !ok || int(got) != want {
					t.Errorf("container port %s is %d; the config listens on %d", portName, got, want)
				}
			}
			// `sluice serve`'s addresses are set in the file: their defaults (loopback) would
			// keep the kubelet, Prometheus and a gateway in another pod out.
			srv, _ := s.raw["server"].(map[string]any)
			for _, key := range []string{"admin_addr", "grpc_addr"} {
				if srv == nil || srv[key] == nil {
					t.Errorf("server.%s is not set explicitly in the mounted config", key)
				}
			}
			if loopback(adminHost) {
				t.Errorf("admin address %s is loopback: probes and Prometheus reach the pod's IP", s.cfg.Server.AdminAddr)
			}
			// Beyond loopback, purges and /debug ask for the admin token (docs/security.md).
			if !loopback(adminHost) && !adminTokenFromSecret(t, objs, s) {
				t.Error("the admin port listens beyond loopback without a token: set SLUICE_ADMIN_TOKEN from a Secret (or server.admin_token_file on a Secret volume)")
			}
			if s.cfg.Server.Pprof {
				t.Error("server.pprof is on: profiles of a production process on its admin port")
			}
			for kind, pr := range map[string]*corev1.Probe{"readiness": s.c.ReadinessProbe, "liveness": s.c.LivenessProbe} {
				path := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[kind]
				if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != path {
					t.Errorf("%s probe is not httpGet %s", kind, path)
					continue
				}
				if got, _ := containerPort(s.pod, pr.HTTPGet.Port); int(got) != adminPort {
					t.Errorf("%s probe on port %d; admin listens on %d", kind, got, adminPort)
				}
			}
			if strings.HasPrefix(name, "istio") {
				d := decodeAs[*appsv1.Deployment](t, dep)
				if got := d.Spec.Template.Annotations["traffic.sidecar.istio.io/excludeInboundPorts"]; got != strconv.Itoa(adminPort) {
					t.Errorf("excludeInboundPorts %q; want the admin port %d, so Prometheus scrapes it without the mesh's mTLS", got, adminPort)
				}
			}
			if g := s.pod.spec.TerminationGracePeriodSeconds; g == nil || float64(*g) <= s.cfg.Server.ShutdownGrace.Seconds() {
				t.Errorf("terminationGracePeriodSeconds %v is not longer than server.shutdown_grace %v: the kubelet would SIGKILL mid-drain", g, s.cfg.Server.ShutdownGrace)
			}
			if len(s.pod.spec.TopologySpreadConstraints) == 0 {
				t.Error("no topologySpreadConstraints: replicas may share a node")
			}
			if loopback(grpcHost) {
				// Sidecar: Envoy in the same pod reaches Sluice through hostAliases.
				if container(s.pod, "envoy") == nil {
					t.Error("gRPC on loopback, but no envoy container in the pod calls it")
				}
				if !slices.ContainsFunc(s.pod.spec.HostAliases, func(h corev1.HostAlias) bool {
					return loopback(h.IP) && slices.Contains(h.Hostnames, "sluice")
				}) {
					t.Error("gRPC on loopback, but `sluice` (envoy.yaml's cluster) does not resolve to 127.0.0.1 in the pod")
				}
			} else {
				checkService(t, objs, dep.Namespace, "sluice", grpcPort, false)
			}
			if name != "istio-ratelimit" {
				rules := sluiceRules(t, objs, dep)
				rl := domainOf(t, domain)
				if _, ok := rules.Domain(rl); !ok {
					t.Errorf("the gateway's ratelimit filter asks for domain %q; the mounted rules have %v", rl, rules.Domains())
				}
			}
		})
	}
}

// adminTokenFromSecret reports whether a `sluice serve` container gets its
// admin token from a Secret: SLUICE_ADMIN_TOKEN from a (non-optional) key,
// or server.admin_token_file inside a Secret volume.
func adminTokenFromSecret(t *testing.T, objs []*object, s served) bool {
	t.Helper()
	for _, e := range s.c.Env {
		if e.Name == "SLUICE_ADMIN_TOKEN" {
			ref := e.ValueFrom.SecretKeyRef
			return ref != nil && (ref.Optional == nil || !*ref.Optional)
		}
	}
	f := s.cfg.Server.AdminTokenFile
	if f == "" {
		return false
	}
	for _, vm := range s.c.VolumeMounts {
		if rel, err := filepath.Rel(vm.MountPath, f); err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range s.pod.spec.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return true
			}
		}
	}
	return false
}

// TestWorkerAgreesWithSluice: the worker warms the cache Sluice writes,
// through the gateway Sluice sends batch items to.
func TestWorkerAgreesWithSluice(t *testing.T) {
	for _, name := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			objs := render(t, name)
			var worker *pod
			for _, p := range pods(t, objs) {
				if p.owner.Name == "sluice-worker" {
					worker = &p
				}
			}
			if worker == nil {
				if name == "istio-ratelimit" {
					return // the rate limit service alone
				}
				t.Fatal("no sluice-worker Deployment")
			}
			s := sluiceServe(t, objs, one(t, objs, "Deployment", "sluice"))
			c := container(*worker, "worker")
			if c == nil || len(c.Args) != 1 || c.Args[0] != "worker" {
				t.Fatalf("worker container runs %v; want [worker]", c)
			}
			if len(worker.spec.InitContainers) != 1 || !slices.Equal(worker.spec.InitContainers[0].Args, []string{"worker", "migrate"}) {
				t.Error("the worker does not migrate in an init container first")
			}
			prefix, ok := envValue(t, objs, *worker, c, "REDIS_KEY_PREFIX")
			if !ok {
				prefix = "sluice:"
			}
			if prefix != s.cfg.Redis.KeyPrefix {
				t.Errorf("worker REDIS_KEY_PREFIX %q; sluice writes under %q", prefix, s.cfg.Redis.KeyPrefix)
			}
			admin, ok := envValue(t, objs, *worker, c, "WORKER_ADMIN_ADDR")
			if !ok {
				t.Fatal("worker admin address not set: its default is loopback, out of the kubelet's and Prometheus's reach")
			}
			host, port := portOf(t, admin)
			if loopback(host) {
				t.Errorf("WORKER_ADMIN_ADDR %s is loopback", admin)
			}
			if got, ok := containerPort(*worker, intstr.FromString("admin")); !ok || int(got) != port {
				t.Errorf("worker container port admin is %d; it listens on %d", got, port)
			}
			envoyURL, _ := envValue(t, objs, *worker, c, "ENVOY_URL")
			tenants, _ := envValue(t, objs, *worker, c, "WARM_TENANTS")
			templates, _ := envValue(t, objs, *worker, c, "WARM_TEMPLATES")
			if envoyURL == "" {
				t.Fatal("ENVOY_URL is empty: the worker never warms")
			}
			if strings.TrimSpace(tenants) == "" && strings.TrimSpace(templates) == "" {
				t.Error("ENVOY_URL set without WARM_TENANTS or WARM_TEMPLATES: the worker exits")
			}
			// Warming goes to the listener batch items go to (Envoy's internal listener where
			// there is one), unless that is Sluice's own pod's Envoy on loopback (sidecar): then
			// to the internal listener of those pods through a Service.
			bh, _ := portOf(t, hostPort(t, s.cfg.Batch.ListenerURL))
			if loopback(bh) {
				host, port := portOf(t, hostPort(t, envoyURL))
				checkEnvoyInternalService(t, objs, worker.namespace, host, port)
			} else if strings.TrimSuffix(envoyURL, "/") != strings.TrimSuffix(s.cfg.Batch.ListenerURL, "/") {
				t.Errorf("ENVOY_URL %s; batch.listener_url %s: both name the gateway's internal listener", envoyURL, s.cfg.Batch.ListenerURL)
			}
		})
	}
}

func hostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "80")
	}
	return u.Host
}

// listenerPort is the port of envoy.yaml's listener name.
func listenerPort(t *testing.T, name string) int {
	t.Helper()
	l := envoy.Find(envoyListeners(t), name)
	if l == nil {
		t.Fatalf("envoy.yaml has no listener %s", name)
	}
	_, port := portOf(t, l.Address)
	return port
}

// checkEnvoyInternalService checks that host:port (<svc>[.<ns>...], port of
// the Service) reaches envoy.yaml's internal listener: a Service whose port
// targets, on every pod it selects, an Envoy container's port of that
// listener.
func checkEnvoyInternalService(t *testing.T, objs []*object, namespace, host string, port int) {
	t.Helper()
	parts := strings.Split(host, ".")
	if len(parts) > 1 {
		namespace = parts[1]
	}
	checkService(t, objs, namespace, parts[0], port, false)
	want := listenerPort(t, envoy.InternalListener)
	for _, o := range ofKind(objs, "Service") {
		if o.Namespace != namespace || o.Name != parts[0] {
			continue
		}
		svc := decodeAs[*corev1.Service](t, o)
		for _, sp := range svc.Spec.Ports {
			if int(sp.Port) != port {
				continue
			}
			for _, p := range selected(pods(t, objs), namespace, labels.SelectorFromSet(svc.Spec.Selector)) {
				var got int32
				if c := container(p, "envoy"); c != nil {
					got, _ = containerPort(pod{spec: &corev1.PodSpec{Containers: []corev1.Container{*c}}}, sp.TargetPort)
				}
				if int(got) != want {
					t.Errorf("%s port %d reaches %s port %d; envoy.yaml's internal listener is an Envoy container's %d", o, port, p.owner, got, want)
				}
			}
		}
	}
}

// TestBatchListener: batch.listener_url names, as Sluice reaches it, the
// gateway's listener that takes the client address from the header Sluice
// sets (envoy.yaml's internal listener), where the overlay has one.
func TestBatchListener(t *testing.T) {
	for _, name := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			if name == "istio-ratelimit" {
				t.Skip("the rate limit service alone: no ext_proc filter calls Sluice, so no batch runs")
			}
			objs := render(t, name)
			s := sluiceServe(t, objs, one(t, objs, "Deployment", "sluice"))
			host, port := portOf(t, hostPort(t, s.cfg.Batch.ListenerURL))
			switch {
			case loopback(host):
				if container(s.pod, "envoy") == nil || port != listenerPort(t, envoy.InternalListener) {
					t.Errorf("batch.listener_url %s: the pod's Envoy has no internal listener on %d", s.cfg.Batch.ListenerURL, port)
				}
			case name == "envoy-gateway":
				// The Service of the Gateway that stands for envoy.yaml's internal listener, named
				// by its EnvoyProxy, in Envoy Gateway's namespace; reachable from Sluice and the
				// worker alone.
				var gwName string
				for _, g := range egGateways {
					if g.envoyListener == envoy.InternalListener {
						gwName = g.gateway
					}
				}
				gw := decodeAs[*gwapiv1.Gateway](t, one(t, objs, "Gateway", gwName))
				proxy := decodeAs[*egv1a1.EnvoyProxy](t, one(t, objs, "EnvoyProxy", string(gw.Spec.Infrastructure.ParametersRef.Name)))
				svc := proxy.Spec.Provider.Kubernetes.EnvoyService
				if want := *svc.Name + "." + egNamespace; host != want || int(gw.Spec.Listeners[0].Port) != port {
					t.Errorf("batch.listener_url %s; want http://%s:%d (Gateway %s's Service)", s.cfg.Batch.ListenerURL, want, gw.Spec.Listeners[0].Port, gwName)
				}
				if svc.Type == nil || *svc.Type != egv1a1.ServiceTypeClusterIP {
					t.Errorf("Gateway %s's Service is not ClusterIP (Envoy Gateway's default is a LoadBalancer): its listener takes the client address from a header", gwName)
				}
				for _, p := range egPods(t, objs) {
					if p.owner.Name == proxy.Name {
						checkAdmits(t, objs, p, "listener "+string(gw.Spec.Listeners[0].Name), egContainerPort(gw.Spec.Listeners[0].Port),
							[]peer{sluicePeer(s.pod.namespace), workerPeer(s.pod.namespace)},
							[]peer{anyPeer, sameNamespaceAnyPeer(egNamespace), prometheusPeer, sluicePeer("elsewhere")})
					}
				}
				for _, o := range ofKind(objs, "EnvoyProxy") {
					if decodeAs[*egv1a1.EnvoyProxy](t, o).Spec.Provider.Kubernetes.EnvoyDeployment.Pod.Labels["sluice.dev/gateway"] != "true" {
						t.Errorf("%s: the Envoy pods lack sluice.dev/gateway: \"true\", so the NetworkPolicy keeps them from Sluice's gRPC port", o)
					}
				}
			case strings.HasPrefix(name, "istio"):
				if host != "istio-ingressgateway.istio-system" {
					t.Errorf("batch.listener_url %s; want Istio's ingress gateway", s.cfg.Batch.ListenerURL)
				}
			default:
				checkEnvoyInternalService(t, objs, s.pod.namespace, host, port)
			}
		})
	}
}

// envoyPortNames names the container port of each listener of envoy.yaml in
// the pods that run it. A listener added to envoy.yaml fails TestEnvoyPods
// until it is named here and declared (or bound to loopback).
var envoyPortNames = map[string]string{
	envoy.IngressListener:  "http",
	envoy.InternalListener: "internal",
	envoy.StatsListener:    "stats",
}

// envoyListeners returns envoy.yaml's listeners.
func envoyListeners(t *testing.T) []*envoy.Settings {
	t.Helper()
	ls, err := envoy.ParseListeners(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// TestEnvoyPods: the pods that run envoy/envoy.yaml themselves run it
// unchanged, with the pinned image, a container port for each listener that
// is not on loopback and none for the admin interface (loopback), a readiness
// probe on the stats listener, and the names its clusters use resolve.
func TestEnvoyPods(t *testing.T) {
	b, err := envoy.LoadBootstrap(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	admin := b.GetAdmin().GetAddress().GetSocketAddress()
	if !loopback(admin.GetAddress()) {
		t.Errorf("envoy.yaml's admin interface listens on %s: it must stay on loopback (/quitquitquit, /config_dump)", admin.GetAddress())
	}
	listeners := envoyListeners(t)
	stats := envoy.Find(listeners, envoy.StatsListener)
	if stats == nil {
		t.Fatal("envoy.yaml has no stats listener: the probes and Prometheus have nothing to reach")
	}
	n := 0
	for _, name := range overlays(t) {
		objs := render(t, name)
		for _, p := range pods(t, objs) {
			c := container(p, "envoy")
			if c == nil {
				continue
			}
			n++
			where := fmt.Sprintf("%s/%s container envoy", name, p.owner.Name)
			if c.Image != "envoyproxy/envoy:v1.40.0" && !strings.HasPrefix(c.Image, "envoyproxy/envoy:v1.40.0@") {
				t.Errorf("%s: image %s; want envoyproxy/envoy:v1.40.0, the release envoy.yaml and go-control-plane v1.40.0 are checked against", where, c.Image)
			}
			i := slices.Index(c.Args, "-c")
			if i < 0 || i+1 >= len(c.Args) {
				t.Errorf("%s: args %q have no -c <bootstrap>", where, c.Args)
				continue
			}
			data, key, _ := mounted(t, objs, p, c, c.Args[i+1])
			if data[key] != string(envoy.DefaultConfig) {
				t.Errorf("%s: -c %s is not envoy/envoy.yaml (deploy/kubernetes/components/envoy-config/envoy.yaml must equal it)", where, c.Args[i+1])
			}
			for _, l := range listeners {
				host, port := portOf(t, l.Address)
				portName, ok := envoyPortNames[l.Listener]
				switch {
				case !ok:
					t.Errorf("envoy.yaml's listener %s has no container port name in envoyPortNames", l.Listener)
				case loopback(host):
					if got, ok := containerPort(p, intstr.FromString(portName)); ok {
						t.Errorf("%s: declares port %s (%d) for listener %s, which listens on loopback only", where, portName, got, l.Listener)
					}
				default:
					if got, ok := containerPort(p, intstr.FromString(portName)); !ok || int(got) != port {
						t.Errorf("%s: port %s is %d; envoy.yaml's listener %s listens on %d", where, portName, got, l.Listener, port)
					}
				}
			}
			if got, ok := containerPort(pod{spec: &corev1.PodSpec{Containers: []corev1.Container{*c}}}, intstr.FromInt32(int32(admin.GetPortValue()))); ok {
				t.Errorf("%s: declares port %d, envoy.yaml's admin interface, which listens on loopback only", where, got)
			}
			// Ready: the stats listener answers. Envoy serves its listeners only once its
			// clusters have initialized (source/server/server.cc, RunHelper: the workers start
			// after the cluster manager's initialized callback), so this is /ready's answer
			// without the admin interface.
			_, statsPort := portOf(t, stats.Address)
			if pr := c.ReadinessProbe; pr == nil || pr.HTTPGet == nil {
				t.Errorf("%s: readiness probe is not httpGet", where)
			} else if got, _ := containerPort(p, pr.HTTPGet.Port); int(got) != statsPort {
				t.Errorf("%s: readiness probe on port %d; envoy.yaml's stats listener is on %d", where, got, statsPort)
			} else {
				path, _, _ := strings.Cut(pr.HTTPGet.Path, "?")
				if rt, err := emulator.MatchRoute(stats, "GET", path, "probe"); err != nil || rt == nil {
					t.Errorf("%s: readiness probe GET %s: no route of the stats listener answers it (%v)", where, pr.HTTPGet.Path, err)
				}
			}
			// The names envoy.yaml's clusters resolve: hostAliases in the pod, else a Service of
			// the namespace (headless, for STRICT_DNS to see every pod); loopback is the pod.
			for _, cl := range b.GetStaticResources().GetClusters() {
				sa := cl.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
				if loopback(sa.GetAddress()) {
					continue
				}
				if slices.ContainsFunc(p.spec.HostAliases, func(h corev1.HostAlias) bool { return slices.Contains(h.Hostnames, sa.GetAddress()) }) {
					s := sluiceServe(t, objs, p.owner)
					if _, port := portOf(t, s.cfg.Server.GRPCAddr); sa.GetAddress() != "sluice" || int(sa.GetPortValue()) != port {
						t.Errorf("%s: cluster %s is %s:%d in the pod; Sluice listens on %s", where, cl.GetName(), sa.GetAddress(), sa.GetPortValue(), s.cfg.Server.GRPCAddr)
					}
					continue
				}
				checkService(t, objs, p.namespace, sa.GetAddress(), int(sa.GetPortValue()), cl.GetName() == "sluice")
			}
		}
	}
	if n < 2 {
		t.Errorf("%d pods run Envoy; want the shared overlay's gateway and the sidecar pod", n)
	}
}

// TestMonitoring: the ServiceMonitor of Sluice gives its targets the job
// label the alert rules use, and the worker's that of the compose stack.
func TestMonitoring(t *testing.T) {
	rules, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "rules", "sluice.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rules), `job="sluice"`) {
		t.Fatal(`the alert rules no longer name job="sluice": update this test and the ServiceMonitor`)
	}
	objs := render(t, "shared")
	for _, tt := range []struct{ monitor, service string }{{"sluice", "sluice"}, {"sluice-worker", "sluice-worker"}} {
		sm := decodeAs[*monitoringv1.ServiceMonitor](t, one(t, objs, "ServiceMonitor", tt.monitor))
		if sm.Spec.JobLabel != "" {
			t.Errorf("ServiceMonitor %s sets jobLabel: the job would not be the Service's name", tt.monitor)
		}
		svc := decodeAs[*corev1.Service](t, one(t, objs, "Service", tt.service))
		if !labelSelector(t, tt.monitor, &sm.Spec.Selector).Matches(labels.Set(svc.Labels)) {
			t.Errorf("ServiceMonitor %s does not select Service %s, whose name is the job label the rules use", tt.monitor, tt.service)
		}
	}
}

// domainOf returns the domain of envoy.yaml's ratelimit filter.
func domainOf(t *testing.T, f *hcmv3.HttpFilter) string {
	t.Helper()
	rl := &ratelimitv3.RateLimit{}
	if err := f.GetTypedConfig().UnmarshalTo(rl); err != nil {
		t.Fatal(err)
	}
	return rl.GetDomain()
}

// composeJob returns the job of deploy/prometheus/prometheus.yml (the compose
// stack's Prometheus) that scrapes metricsPath.
func composeJob(t *testing.T, metricsPath string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName     string `json:"job_name"`
			MetricsPath string `json:"metrics_path"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath == metricsPath {
			return sc.JobName
		}
	}
	t.Fatalf("deploy/prometheus/prometheus.yml scrapes no %s", metricsPath)
	return ""
}

// TestEnvoyMonitoring: where the overlay runs envoy.yaml, one ServiceMonitor
// scrapes every Envoy pod's stats listener, on a path that listener answers,
// as job `envoy` (the compose stack's job for it).
func TestEnvoyMonitoring(t *testing.T) {
	stats := envoy.Find(envoyListeners(t), envoy.StatsListener)
	statsPort := int32(listenerPort(t, envoy.StatsListener))
	for _, name := range overlays(t) {
		objs := render(t, name)
		var envoyPods []pod
		for _, p := range pods(t, objs) {
			if container(p, "envoy") != nil {
				envoyPods = append(envoyPods, p)
			}
		}
		if len(envoyPods) == 0 {
			continue
		}
		t.Run(name, func(t *testing.T) {
			scraped := map[*object]int{}
			for _, o := range ofKind(objs, "ServiceMonitor") {
				sm := decodeAs[*monitoringv1.ServiceMonitor](t, o)
				sel := labelSelector(t, o.String(), &sm.Spec.Selector)
				for _, so := range ofKind(objs, "Service") {
					svc := decodeAs[*corev1.Service](t, so)
					if so.Namespace != o.Namespace || !sel.Matches(labels.Set(svc.Labels)) {
						continue
					}
					for _, ep := range sm.Spec.Endpoints {
						i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
						if i < 0 {
							continue
						}
						for _, p := range selected(envoyPods, so.Namespace, labels.SelectorFromSet(svc.Spec.Selector)) {
							if got, _ := containerPort(p, svc.Spec.Ports[i].TargetPort); got != statsPort {
								continue
							}
							scraped[p.owner]++
							if rt, err := emulator.MatchRoute(stats, "GET", ep.Path, "prometheus"); err != nil || rt == nil {
								t.Errorf("%s scrapes %s, which the stats listener does not answer (%v)", o, ep.Path, err)
							}
							job := ""
							for _, r := range ep.RelabelConfigs {
								if r.TargetLabel == "job" && r.Replacement != nil && len(r.SourceLabels) == 0 {
									job = *r.Replacement
								}
							}
							if want := composeJob(t, ep.Path); job != want {
								t.Errorf("%s gives Envoy's targets job %q; the compose stack's Prometheus calls them %q", o, job, want)
							}
						}
					}
				}
			}
			for _, p := range envoyPods {
				if scraped[p.owner] != 1 {
					t.Errorf("%s: its stats listener is scraped by %d ServiceMonitor endpoints; want 1", p.owner, scraped[p.owner])
				}
			}
		})
	}
}
