// Package config embeds Sluice's example configuration files; `sluice dev`
// runs on them when no files are given.
package config

import _ "embed"

// RateLimitTiers is ratelimit/tiers.yaml: the example tier rules.
//
//go:embed ratelimit/tiers.yaml
var RateLimitTiers []byte
