package tds

// Test helpers of package tds, for the external tests (package tds_test),
// which can import the packages that import tds (tools/tdsfacts).
var (
	LoadHex      = loadHex
	LoadCapture  = loadCapture
	RoundTripRPC = roundTripRPC
	Vec          = vec
)
