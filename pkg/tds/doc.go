// Package tds is tdsgate's pure codec for the Tabular Data Stream protocol
// ([MS-TDS] v39.0). It owns the wire formats the proxy and its tools must
// read or write: the 8-byte packet header and message reassembly, PRELOGIN,
// LOGIN7 (with password obfuscation and the FeatureExt block), ALL_HEADERS,
// the response tokens a proxy needs (ERROR, INFO, LOGINACK, ENVCHANGE,
// DONE/DONEPROC/DONEINPROC, FEATUREEXTACK, COLMETADATA and ROW for a small
// set of types), and the builder for a login-failure response.
//
// The package is pure: bytes in, values out. It opens no sockets, starts no
// goroutines and imports nothing else from tdsgate. Every length read from
// the wire is checked against the bytes actually present before it is used,
// so hostile input yields an *Error, never a panic or an out-of-range read.
// Fuzz targets for every parser live beside it (fuzz_test.go), with their
// seed corpora committed under testdata/fuzz.
package tds
