// Package tdsclient is a minimal TDS client built on pkg/tds: dial, PRELOGIN
// (with TLS as asked), LOGIN7, SQL batches, any other request message
// (SendMessage) and ATTENTION, with the raw tokens of each answer (Read), or
// token by token as its packets arrive (Stream) for answers too big to hold.
// Tests use it where a real driver would hide what they check (exact error
// numbers, RESETCONNECTION, packet boundaries), and the benchmarks use it as
// the lowest-overhead client. The real-client tests use tools/clients.
package tdsclient
