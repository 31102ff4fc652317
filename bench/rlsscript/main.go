// Command rlsscript prints the limiter's Lua script, so bench/ratelimit.sh can
// SCRIPT LOAD it and time the same call with redis-benchmark.
package main

import (
	"fmt"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

func main() { fmt.Print(limiter.ScriptSource()) }
