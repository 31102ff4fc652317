package extproc

import "strings"

// routeTable maps a request path to a configured route name. Safe for
// concurrent use (read-only after construction).
type routeTable []Route

func newRouteTable(routes []Route) routeTable { return append(routeTable(nil), routes...) }

// match returns the name of the first route matching path (query and
// fragment excluded), in config order like Envoy's route table, or
// OtherRoute.
func (t routeTable) match(path string) string {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	for _, r := range t {
		if r.Path != "" {
			if path == r.Path {
				return r.Name
			}
		} else if strings.HasPrefix(path, r.Prefix) {
			return r.Name
		}
	}
	return OtherRoute
}
