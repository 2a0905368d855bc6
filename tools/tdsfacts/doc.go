// Package tdsfacts holds what a public capture of real SQL Server traffic
// showed, as facts and not as bytes: each client request rebuilt with
// pkg/tds from its decoded content (statement texts, procedure ids and
// names, parameter names, types, values and status, ALL_HEADERS, packet
// status bits and splitting). The capture itself is under a licence this
// repository does not take in, so none of its bytes are here; its one long
// free-text value is replaced by generated text of the same length.
//
// Tests use it to check the codec against every RPC shape real clients
// sent (pkg/tds TestRealRPCShapes) and to replay the traffic to the
// stand-in and through tdsgate (tools/standin/server TestWireDiff and
// TestReplayRequestOnlyCaptures), where the real server's answers are
// stated as expected shapes.
package tdsfacts
