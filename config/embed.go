// Package config embeds Sluice's example configuration files; `sluice dev`
// runs on them when no files are given.
package config

import _ "embed"

// RateLimitTiers is ratelimit/tiers.yaml: the example tier rules, which
// `sluice dev` enforces in front of its demo API.
//
//go:embed ratelimit/tiers.yaml
var RateLimitTiers []byte

// RateLimitDev is dev/ratelimit.yaml: the loose rules `sluice dev --upstream`
// enforces in front of the user's own API, so that a browser or a test suite
// is not refused.
//
//go:embed dev/ratelimit.yaml
var RateLimitDev []byte
