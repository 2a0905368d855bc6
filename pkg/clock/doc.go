// Package clock is the one time source tdsgate's timed parts take: the
// limiter's queue timeouts and its lease and fence, the registry's
// heartbeat and reaper loops, and the /health cache. Production code uses
// Real; tests inject a Fake and Advance it instead of sleeping through
// timeouts and TTLs.
package clock
