// Package app owns tdsgate's wiring and lifecycle: it builds the
// components from a config (limiter, buckets with their targets and
// breakers, routes, the client-facing TLS certificate, the frontend
// handler, the listeners), starts them, reloads them on SIGHUP without
// dropping sessions, and on SIGTERM stops accepting, lets sessions finish
// up to the drain timeout, closes the rest, and closes the components in
// reverse order.
package app
