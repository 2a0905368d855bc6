//go:build tools

// Package godeps pins the modules tdsgate builds on before every package
// that uses them exists, so that go.mod and go.sum stay stable while work
// lands in parallel. It is never built.
package godeps

import (
	_ "github.com/VictoriaMetrics/metrics"
	_ "github.com/cilium/ebpf"
	_ "github.com/microsoft/go-mssqldb"
	_ "github.com/redis/rueidis"
	_ "go.yaml.in/yaml/v3"
	_ "golang.org/x/sys/unix"
	_ "modernc.org/sqlite"
)
