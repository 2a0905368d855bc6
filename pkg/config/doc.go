// Package config owns tdsgate's configuration: the structs a YAML file is
// decoded into, the documented Default* value of every option that has one,
// the environment variables that override a file, and Validate, which
// rejects an invalid configuration at start with every problem at once,
// each naming its field by YAML path:
//
//	buckets[1].max_connections: must be > 0 (got 0)
//	routes[0].bucket: unknown bucket "bucket-9"
//
// [Load] and [LoadBytes] are the only ways in from a file: decode (unknown
// keys and wrong types are errors naming their path), defaults for every
// key the file leaves out, environment overrides, defaults derived from
// other fields, then [Config.Validate]. A key given explicitly keeps its
// value, even a zero one: "max_queue_size: 0" means no queue, and
// "queue_timeout: 0s" is rejected rather than silently replaced.
//
// Reloading is loading again: the application builds a new *Config with
// Load and swaps it in; there is no diff. [Demo] is the built-in config of
// `make demo`. example.yaml beside this file documents every option and
// is loaded by the tests; hardened.yaml is the hardened profile (every leg
// encrypted and verified, admin endpoints behind a token), also tested.
// security.go holds the options that keep strangers out: tls reload and
// self_signed_file, admin_auth, credential_routes.
//
// Password hashes of credential routes are checked with pkg/route/passhash
// (not pkg/route, which imports this package).
package config
