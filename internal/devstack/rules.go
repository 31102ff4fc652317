package devstack

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/ratelimitsvc"
)

// ruleTree is the part of ratelimitsvc.Rules' JSON form (the one
// /debug/ratelimit serves) that the banner shows.
type ruleTree struct {
	Domains []struct {
		Domain      string     `json:"domain"`
		Descriptors []ruleNode `json:"descriptors"`
	} `json:"domains"`
}

type ruleNode struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	ShadowMode  bool   `json:"shadow_mode"`
	Limits      []ruleLimit
	Descriptors []ruleNode `json:"descriptors"`
}

type ruleLimit struct {
	Name            string  `json:"name"`
	ID              string  `json:"id"`
	Unlimited       bool    `json:"unlimited"`
	RequestsPerUnit *uint64 `json:"requests_per_unit"`
	Unit            string  `json:"unit"`
	UnitMultiplier  uint32  `json:"unit_multiplier"`
}

// RuleLines describes rules in one line per descriptor that carries limits,
// for people: the descriptor path ("tier=anonymous, per remote_address": a
// key without a value counts each value apart), then its limits ("1000 per
// second (dev_anonymous_ip)"). Domains other than one come first by name.
// nil rules give no lines.
func RuleLines(rules *ratelimitsvc.Rules) []string {
	b, err := rules.MarshalJSON()
	if err != nil {
		return nil
	}
	var t ruleTree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil
	}
	var out []string
	for _, d := range t.Domains {
		prefix := ""
		if len(t.Domains) > 1 {
			prefix = "domain " + d.Domain + ": "
		}
		for _, n := range d.Descriptors {
			out = appendRuleLines(out, prefix, nil, n)
		}
	}
	return out
}

func appendRuleLines(out []string, prefix string, path []string, n ruleNode) []string {
	step := n.Key
	switch {
	case n.Value != "":
		step += "=" + n.Value
	case len(n.Descriptors) > 0:
		step += "=any other"
	default:
		step = "per " + step
	}
	path = append(path[:len(path):len(path)], step)
	if len(n.Limits) > 0 {
		var ls []string
		for _, l := range n.Limits {
			ls = append(ls, limitText(l))
		}
		line := prefix + strings.Join(path, ", ") + ": " + strings.Join(ls, "; ")
		if n.ShadowMode {
			line += " (shadow mode: counted, never refused)"
		}
		out = append(out, line)
	}
	for _, c := range n.Descriptors {
		out = appendRuleLines(out, prefix, path, c)
	}
	return out
}

func limitText(l ruleLimit) string {
	name := l.Name
	if name == "" {
		name = l.ID
	}
	if l.Unlimited || l.RequestsPerUnit == nil {
		return fmt.Sprintf("unlimited (%s)", name)
	}
	unit := l.Unit
	if l.UnitMultiplier > 1 {
		unit = strconv.FormatUint(uint64(l.UnitMultiplier), 10) + " " + unit + "s"
	}
	return fmt.Sprintf("%d per %s (%s)", *l.RequestsPerUnit, unit, name)
}
