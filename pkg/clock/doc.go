// Package clock is the one time source tdsgate's timed parts take: the
// limiter's queue timeouts, its lease, its fence and its peer check (limiter.WithClock),
// the registry's heartbeat and reaper loops (registry.Config.Clock), the
// breaker's probes (backend.Breaker.Clock), the pool's idle_timeout,
// max_lifetime, pressure and its janitor's tick (pool.Settings.Clock) and
// the /health cache
// (admin.HealthOptions.Clock). Production code uses Real; tests inject a
// Fake and Advance it instead of sleeping through timeouts and TTLs.
package clock
