//go:build tools

// Package tools pins github.com/coredns/coredns for aidc's real nodes.
package tools

import (
	_ "github.com/coredns/coredns"
)
