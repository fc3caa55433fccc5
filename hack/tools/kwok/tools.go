//go:build tools

// Package tools pins sigs.k8s.io/kwok for aidc's test bed.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
