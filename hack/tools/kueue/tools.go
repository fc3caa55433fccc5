//go:build tools

// Package tools pins Kueue's controller manager (hack/build-tools.sh builds cmd/kueue) and, from
// the same module, the CRDs and webhook configurations the test bed installs beside it.
package tools

import _ "sigs.k8s.io/kueue/cmd/kueue"
