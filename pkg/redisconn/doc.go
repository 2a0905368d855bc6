// Package redisconn owns tdsgate's one Redis client. The app builds it from
// the config (redis.addr or redis.sentinel, redis.tls, redis.username,
// redis.password, redis.db) and hands the same client to the limiter, the
// registry and pool pressure; it closes it last, after the registry left.
//
// The client never fails to be built because Redis is down: a standalone
// client is rueidis' single client, which reconnects by itself; a Sentinel
// client that cannot reach any sentinel at start is built lazily, on the
// first command after a sentinel answers (at most every RetryEvery), and
// every command until then fails at once with ErrNotConnected — the
// limiter treats that as Redis being down and admits on its share.
//
// Invalidations (rueidis client-side caching) go to the function given to
// SetOnInvalidations, so the limiter can be built after the client.
package redisconn
