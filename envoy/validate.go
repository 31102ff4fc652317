package envoy

import "google.golang.org/protobuf/proto"

// Validate runs m's protoc-gen-validate rules (ValidateAll) and those of every
// message packed in a google.protobuf.Any below it, as LoadBootstrap does for
// a whole bootstrap. It is for Envoy fragments that live outside a bootstrap
// (an Istio EnvoyFilter's patch value, an Envoy Gateway EnvoyPatchPolicy's
// resource); the Any types it can resolve are those linked into the binary.
func Validate(m proto.Message) error {
	return validateTree(m, string(m.ProtoReflect().Descriptor().Name()))
}
