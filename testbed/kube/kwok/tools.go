//go:build tools

// Package tools pins kwok, the node simulator this module builds (see ../build.sh).
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
