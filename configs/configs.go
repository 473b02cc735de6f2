// Package configs holds natsgate's example configurations. The demo's is
// embedded in the binary, so `natsgate demo` runs from anywhere.
package configs

import _ "embed"

// Demo is configs/demo.yaml, the configuration `natsgate demo` serves.
//
//go:embed demo.yaml
var Demo []byte
