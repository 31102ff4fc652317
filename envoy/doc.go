// Package envoy holds the Envoy configs that front Sluice and loads the
// settings Sluice's tests and dev gateway emulate from them.
package envoy

//go:generate go run gen_alltypes.go
