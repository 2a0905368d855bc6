// Command proxy is tdsgate: a connection-pooling and admission-control
// proxy for Microsoft SQL Server. It owns the process: main parses flags
// and calls run, which builds the application from config and waits for
// signals.
package main
