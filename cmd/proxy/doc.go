// Command proxy is tdsgate: a connection-pooling and admission-control
// proxy for Microsoft SQL Server. It owns the process: main parses flags
// and calls run, which builds the application from config and waits for
// signals. `proxy admin COMMAND` (admin.go) is the admin API's client:
// aligned tables or -o json, --addr and --token-file defaulting from the
// config file; `proxy hash-password` hashes a route's password.
package main
