//go:build tools

// Package tools pins sigs.k8s.io/cri-tools (crictl) for aidc's real nodes.
package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
