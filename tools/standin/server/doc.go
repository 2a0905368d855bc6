// Package server is the wire side of the SQL Server stand-in: a TDS 7.4
// server (TDS 7.1 to 8.0 strict accepted) that real SQL Server clients
// accept, with the SQL executed by tools/standin/engine on SQLite. It is
// a stand-in for tests, the demo and benchmarks — not a SQL Server.
//
// It owns: the listener, PRELOGIN and the encryption negotiation (as SQL
// Server answers each client ENCRYPTION choice, TLS inside PRELOGIN
// packets, TDS 8.0 strict), LOGIN7 authentication against configured
// logins, the login response (LOGINACK, ENVCHANGE, INFO 5701/5703, DONE),
// max_connections (error 17809), SQLBatch, RPC (sp_executesql,
// sp_prepare, sp_execute, sp_prepexec, sp_unprepare), transaction manager
// requests, ATTENTION and RESETCONNECTION, and the counters of the
// connections it served (current and peak), which tests read to check what
// the backend saw.
package server
