//go:build tools

// Package tools pins Prometheus and promtool (hack/build-tools.sh builds both, with only the file,
// http and kubernetes service discoveries: the tests scrape the bed, nothing in a cloud).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
