//go:build tools

// Package tools pins helm.sh/helm/v3 for aidc's test bed.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
