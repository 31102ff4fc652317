package kubernetes

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	egv1a1 "github.com/envoyproxy/gateway/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/sluicehq/sluice/envoy"
)

// peer is a pod that may open a connection: its namespace and labels.
type peer struct {
	namespace string
	labels    map[string]string
}

func (p peer) String() string { return fmt.Sprintf("%s pod %v", p.namespace, p.labels) }

// Peers the checks below use. Namespaces carry only the label the API server
// gives every namespace (kubernetes.io/metadata.name).
var (
	prometheusPeer = peer{"monitoring", map[string]string{"app.kubernetes.io/name": "prometheus"}}
	anyPeer        = peer{"default", map[string]string{"app": "anything"}}
)

func sluicePeer(ns string) peer {
	return peer{ns, map[string]string{"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "server"}}
}

func workerPeer(ns string) peer {
	return peer{ns, map[string]string{"app.kubernetes.io/name": "sluice", "app.kubernetes.io/component": "worker"}}
}

// sameNamespaceAnyPeer is a stranger in the target's own namespace.
func sameNamespaceAnyPeer(ns string) peer { return peer{ns, map[string]string{"app": "anything"}} }

// admitted reports whether the rendered NetworkPolicies let from open a TCP
// connection to port of the target pod, as the API's semantics say: a pod no
// policy selects for Ingress accepts everything; otherwise some rule of a
// selecting policy must name the port (by number or by the target's port
// name; no ports: all) and the peer (namespaceSelector against the
// namespace's name label, podSelector against its labels; no podSelector:
// every pod of those namespaces; no namespaceSelector: the policy's own
// namespace; an ipBlock is taken to admit anyone).
func admitted(t *testing.T, objs []*object, target pod, port int32, from peer) bool {
	t.Helper()
	isolated := false
	for _, o := range ofKind(objs, "NetworkPolicy") {
		if o.Namespace != target.namespace {
			continue
		}
		np := decodeAs[*networkingv1.NetworkPolicy](t, o)
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		ingress := len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		if !ingress || !sel.Matches(labels.Set(target.labels)) {
			continue
		}
		isolated = true
		for _, r := range np.Spec.Ingress {
			if portMatches(target, r.Ports, port) && peerMatches(t, o.Namespace, r.From, from) {
				return true
			}
		}
	}
	return !isolated
}

func portMatches(target pod, ports []networkingv1.NetworkPolicyPort, port int32) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.Int:
			if end := p.EndPort; p.Port.IntVal == port || (end != nil && p.Port.IntVal <= port && port <= *end) {
				return true
			}
		default:
			if got, ok := containerPort(target, *p.Port); ok && got == port {
				return true
			}
		}
	}
	return false
}

func peerMatches(t *testing.T, policyNS string, from []networkingv1.NetworkPolicyPeer, p peer) bool {
	t.Helper()
	if len(from) == 0 {
		return true
	}
	for _, f := range from {
		if f.IPBlock != nil {
			return true
		}
		nsOK := p.namespace == policyNS
		if f.NamespaceSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(f.NamespaceSelector)
			if err != nil {
				t.Fatal(err)
			}
			nsOK = sel.Matches(labels.Set{"kubernetes.io/metadata.name": p.namespace})
		}
		podOK := true
		if f.PodSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(f.PodSelector)
			if err != nil {
				t.Fatal(err)
			}
			podOK = sel.Matches(labels.Set(p.labels))
		}
		if nsOK && podOK {
			return true
		}
	}
	return false
}

// namedPort returns the number of a pod's named port, failing without it.
func namedPort(t *testing.T, p pod, name string) int32 {
	t.Helper()
	n, ok := containerPort(p, intstr.FromString(name))
	if !ok {
		t.Fatalf("%s declares no port %s", p.owner, name)
	}
	return n
}

// checkAdmits reports a peer the policies should admit and do not, or the
// reverse.
func checkAdmits(t *testing.T, objs []*object, target pod, what string, port int32, want, wantNot []peer) {
	t.Helper()
	for _, p := range want {
		if !admitted(t, objs, target, port, p) {
			t.Errorf("%s: %s (port %d) does not admit %s", target.owner, what, port, p)
		}
	}
	for _, p := range wantNot {
		if admitted(t, objs, target, port, p) {
			t.Errorf("%s: %s (port %d) admits %s", target.owner, what, port, p)
		}
	}
}

// TestNetworkPolicyAdmitsGateways: whoever calls Sluice's gRPC port is
// admitted, and nobody else; Prometheus alone reaches the admin ports.
func TestNetworkPolicyAdmitsGateways(t *testing.T) {
	for _, name := range overlays(t) {
		t.Run(name, func(t *testing.T) {
			objs := render(t, name)
			var sluice, worker *pod
			for _, p := range pods(t, objs) {
				switch p.owner.Name {
				case "sluice":
					sluice = &p
				case "sluice-worker":
					worker = &p
				}
			}
			if sluice == nil {
				t.Fatal("no sluice Deployment")
			}
			strangers := []peer{anyPeer, sameNamespaceAnyPeer(sluice.namespace)}
			checkAdmits(t, objs, *sluice, "admin", namedPort(t, *sluice, "admin"), []peer{prometheusPeer}, strangers)
			if worker != nil {
				checkAdmits(t, objs, *worker, "admin", namedPort(t, *worker, "admin"), []peer{prometheusPeer}, strangers)
			}
			var callers []peer
			switch {
			case name == "shared":
				for _, p := range pods(t, objs) {
					if container(p, "envoy") != nil {
						callers = append(callers, peer{p.namespace, p.labels})
					}
				}
			case strings.HasPrefix(name, "istio"):
				for _, o := range ofKind(objs, "EnvoyFilter") {
					callers = append(callers, peer{o.Namespace, decodeAs[*envoyFilter](t, o).spec.GetWorkloadSelector().GetLabels()})
				}
			case name == "envoy-gateway":
				for _, o := range ofKind(objs, "EnvoyProxy") {
					proxy := decodeAs[*egv1a1.EnvoyProxy](t, o)
					callers = append(callers, peer{egNamespace, proxy.Spec.Provider.Kubernetes.EnvoyDeployment.Pod.Labels})
				}
			default:
				// sidecar: gRPC stays on loopback, which no NetworkPolicy filters.
				if got, ok := containerPort(*sluice, intstr.FromString("grpc")); ok {
					checkAdmits(t, objs, *sluice, "grpc", got, nil, strangers)
				}
				return
			}
			if len(callers) == 0 {
				t.Fatal("no gateway pods found")
			}
			checkAdmits(t, objs, *sluice, "grpc", namedPort(t, *sluice, "grpc"), callers, strangers)
		})
	}
}

// egNamespace is where Envoy Gateway runs the Envoy pods of a Gateway (its
// controller's namespace, the default of its Helm chart).
const egNamespace = "envoy-gateway-system"

// TestEnvoyListenersReachable: in the pods that run envoy.yaml, the internal
// listener (which takes the client address from a header) admits Sluice and
// the worker alone, the stats listener Prometheus alone, and the ingress
// listener everyone.
func TestEnvoyListenersReachable(t *testing.T) {
	n := 0
	for _, name := range overlays(t) {
		objs := render(t, name)
		for _, p := range pods(t, objs) {
			if container(p, "envoy") == nil {
				continue
			}
			n++
			ns := p.namespace
			strangers := []peer{anyPeer, sameNamespaceAnyPeer(ns), prometheusPeer, sluicePeer("elsewhere"), workerPeer("elsewhere")}
			internal := []peer{workerPeer(ns)}
			if container(p, "sluice") == nil {
				internal = append(internal, sluicePeer(ns)) // a sidecar's Sluice uses loopback
			}
			checkAdmits(t, objs, p, "listener internal", namedPort(t, p, envoyPortNames[envoy.InternalListener]), internal, strangers)
			checkAdmits(t, objs, p, "listener stats", namedPort(t, p, envoyPortNames[envoy.StatsListener]), []peer{prometheusPeer}, []peer{anyPeer, sameNamespaceAnyPeer(ns)})
			checkAdmits(t, objs, p, "listener ingress", namedPort(t, p, envoyPortNames[envoy.IngressListener]), []peer{anyPeer}, nil)
		}
	}
	if n < 2 {
		t.Errorf("%d pods run Envoy; want the shared overlay's gateway and the sidecar pod", n)
	}
}

// TestNetworkPolicyEvaluation proves admitted can say no: a port the rule
// does not name, a peer outside the selected namespace, a policy of another
// namespace, and a pod no policy isolates.
func TestNetworkPolicyEvaluation(t *testing.T) {
	objs, err := parseObjects([]byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec:
  podSelector: {matchLabels: {role: target}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports:
    - port: web
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: mon}}
    ports:
    - port: 9000
`), "policy")
	if err != nil {
		t.Fatal(err)
	}
	target := pod{owner: &object{Kind: "Deployment", Name: "t"}, namespace: "a", labels: map[string]string{"role": "target"},
		spec: &corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "web", ContainerPort: 80}, {ContainerPort: 9000}}}}}}
	client := map[string]string{"role": "client"}
	for _, tt := range []struct {
		name   string
		target pod
		port   int32
		from   peer
		want   bool
	}{
		{"named port, same namespace", target, 80, peer{"a", client}, true},
		{"other port", target, 81, peer{"a", client}, false},
		{"client in another namespace", target, 80, peer{"b", client}, false},
		{"stranger", target, 80, peer{"a", map[string]string{"role": "other"}}, false},
		{"any pod of the selected namespace", target, 9000, peer{"mon", nil}, true},
		{"numbered port from elsewhere", target, 9000, peer{"a", client}, false},
		{"a pod no policy isolates", pod{namespace: "a", labels: map[string]string{"role": "free"}, spec: target.spec}, 81, peer{"b", nil}, true},
		{"the policy's namespace only", pod{namespace: "z", labels: target.labels, spec: target.spec}, 81, peer{"b", nil}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := admitted(t, objs, tt.target, tt.port, tt.from); got != tt.want {
				t.Errorf("admitted %v; want %v", got, tt.want)
			}
		})
	}
}
