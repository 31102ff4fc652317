package emulator

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/sluicehq/sluice/internal/header"
)

// checkResult is Filters::Common::MutationRules::CheckResult.
type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

type checkOp int

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

// checker applies HeaderMutationRules the way
// source/extensions/filters/common/mutation_rules/mutation_rules.cc does.
// Safe for concurrent use.
type checker struct {
	rules    *mutationv3.HeaderMutationRules
	allow    *regexp.Regexp
	disallow *regexp.Regexp
}

func newChecker(rules *mutationv3.HeaderMutationRules) (*checker, error) {
	c := &checker{rules: rules}
	if re := rules.GetAllowExpression(); re != nil {
		r, err := regexp.Compile("^(?:" + re.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("mutation_rules.allow_expression: %w", err)
		}
		c.allow = r
	}
	if re := rules.GetDisallowExpression(); re != nil {
		r, err := regexp.Compile("^(?:" + re.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("mutation_rules.disallow_expression: %w", err)
		}
		c.disallow = r
	}
	return c, nil
}

// routingHeaders may be changed only with allow_all_routing (host, :authority,
// :method, :scheme; HeaderMutationRules.allow_all_routing).
var routingHeaders = map[string]bool{"host": true, ":authority": true, ":method": true, ":scheme": true}

func (c *checker) check(op checkOp, name, value string) checkResult {
	if c.allowed(op, name) && (op == opRemove || validMutationValue(name, value)) {
		return checkOK
	}
	if c.rules.GetDisallowIsError().GetValue() {
		return checkFail
	}
	return checkIgnore
}

func (c *checker) allowed(op checkOp, name string) bool {
	// Removing host or a pseudo-header (":...") is refused whatever the
	// rules say (mutation_rules.cc Checker::isAllowed).
	if op == opRemove && (name == "host" || strings.HasPrefix(name, ":")) {
		return false
	}
	if c.disallow != nil && c.disallow.MatchString(name) {
		return false
	}
	if c.allow != nil && c.allow.MatchString(name) {
		return true
	}
	if c.rules.GetDisallowAll().GetValue() {
		return false
	}
	if !c.rules.GetAllowAllRouting().GetValue() && routingHeaders[name] {
		return false
	}
	// System headers take one value only, so appending to one is refused too.
	if strings.HasPrefix(name, ":") && (op == opAppend || c.rules.GetDisallowSystem().GetValue()) {
		return false
	}
	if !c.rules.GetAllowEnvoy().GetValue() && strings.HasPrefix(name, "x-envoy") {
		return false
	}
	return true
}

// validMutationValue is Checker::isValidValue.
func validMutationValue(name, value string) bool {
	if !strings.HasPrefix(name, ":") && !validHeaderValue(value) {
		return false
	}
	switch name {
	case "host", ":authority":
		return value != "" && validHeaderValue(value) && !strings.ContainsAny(value, " /?#@")
	case ":scheme":
		return value == "http" || value == "https"
	case ":status":
		n, err := strconv.ParseUint(value, 10, 32)
		return err == nil && n >= 200
	}
	return true
}

// mutationLimits are the HCM header limits a mutation must respect
// (MutationUtils::responseHeaderSizeCheck and headerMutationResultCheck):
// common_http_protocol_options.max_headers_count (default 100) and
// max_request_headers_kb (default 60).
type mutationLimits struct {
	maxCount int
	maxBytes int
}

// errMutation is what a rejected mutation returns; ext_proc turns it into a
// status_on_error local reply (Filter::handleErrorResponse).
var errMutation = errors.New("header mutation rejected")

// applyHeaderMutation follows MutationUtils::applyHeaderMutations.
// replacing is CommonResponse.status == CONTINUE_AND_REPLACE, which also lets
// ":method" change; dropContentLength ignores content-length changes in the
// modes where ext_proc removes it (ProcessorState::shouldRemoveContentLength).
func applyHeaderMutation(m *extprocsvc.HeaderMutation, h *header.List, replacing, dropContentLength bool, c *checker, lim mutationLimits) error {
	if m == nil {
		return nil
	}
	if len(m.GetRemoveHeaders()) > lim.maxCount || len(m.GetSetHeaders()) > lim.maxCount {
		return fmt.Errorf("%w: header mutation count exceeds the HCM header count limit %d", errMutation, lim.maxCount)
	}
	for _, name := range m.GetRemoveHeaders() {
		if !validHeaderName(name) {
			return fmt.Errorf("%w: invalid character in remove_headers", errMutation)
		}
		name = strings.ToLower(name)
		switch c.check(opRemove, name, "") {
		case checkOK:
			h.Del(name)
		case checkFail:
			return fmt.Errorf("%w: invalid attempt to remove %s", errMutation, name)
		}
	}
	for _, sh := range m.GetSetHeaders() {
		hv := sh.GetHeader()
		if hv == nil {
			continue
		}
		// A HeaderValue may set value or raw_value, not both (base.proto
		// HeaderValue; Envoy fails the request).
		if hv.GetValue() != "" && len(hv.GetRawValue()) > 0 {
			return fmt.Errorf("%w: header %q sets both value and raw_value", errMutation, hv.GetKey())
		}
		// Envoy reads raw_value only (send_header_raw_value); a mutation that
		// sets just `value` yields an empty header value (envoy#31555).
		value := string(hv.GetRawValue())
		if !validHeaderName(hv.GetKey()) || !validHeaderValue(value) {
			return fmt.Errorf("%w: invalid character in set_headers", errMutation)
		}
		name := strings.ToLower(hv.GetKey())
		if dropContentLength && name == "content-length" {
			continue
		}
		// Envoy's ext_proc reads only the deprecated `append` field (false
		// when unset) and never append_action, whatever its value
		// (MutationUtils::applyHeaderMutations, source/extensions/filters/
		// http/ext_proc/mutation_utils.cc; envoy#36982).
		appendMode := sh.GetAppend().GetValue()
		op := opSet
		if appendMode && h.Has(name) {
			op = opAppend
		}
		res := c.check(op, name, value)
		if replacing && name == ":method" {
			res = checkOK
		}
		switch res {
		case checkOK:
			if appendMode {
				h.Add(name, value)
			} else {
				h.Set(name, value)
			}
		case checkFail:
			return fmt.Errorf("%w: invalid attempt to modify %s", errMutation, name)
		}
	}
	if len(*h) > lim.maxCount || h.ByteSize() > lim.maxBytes {
		return fmt.Errorf("%w: headers exceed the HCM limits after mutation", errMutation)
	}
	return nil
}

// applyBodyMutation is MutationUtils::applyBodyMutations.
func applyBodyMutation(m *extprocsvc.BodyMutation, body []byte) []byte {
	switch x := m.GetMutation().(type) {
	case *extprocsvc.BodyMutation_Body:
		return append([]byte(nil), x.Body...)
	case *extprocsvc.BodyMutation_ClearBody:
		if x.ClearBody {
			return nil
		}
	}
	return body
}
