package frontend

import (
	"context"
	"log/slog"
)

// sessionLog is the handler of a session's logger: it adds the session's
// attributes — its id and client, then, once known, the login's user,
// database, application and encryption, then the bucket and rule — to
// each record it handles, in that order, ahead of the record's own, as
// slog's With would have formatted them. With formats them when it is
// called and keeps the result (a copy of the handler and its text) for
// the session's life, logged or not; a session that logs nothing at the
// enabled level (the default warn, while it idles) keeps only this.
type sessionLog struct {
	base slog.Handler
	s    *session
}

// logStage says which of the session's attributes its log lines carry.
type logStage uint8

const (
	logAccepted logStage = iota // session, client
	logLoggedIn                 // + user, database, app, client_encryption
	logRouted                   // + bucket, rule
)

// newSessionLog is h's logger for s, with its attributes as stage says.
func newSessionLog(base *slog.Logger, s *session) *slog.Logger {
	return slog.New(&sessionLog{base: base.Handler(), s: s})
}

func (l *sessionLog) Enabled(ctx context.Context, level slog.Level) bool {
	return l.base.Enabled(ctx, level)
}

func (l *sessionLog) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(l.attrs()...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return l.base.Handle(ctx, out)
}

// WithAttrs and WithGroup leave the session's own handler: the session's
// attributes are formatted into the new one, as With would have.
func (l *sessionLog) WithAttrs(as []slog.Attr) slog.Handler {
	return l.base.WithAttrs(l.attrs()).WithAttrs(as)
}

func (l *sessionLog) WithGroup(name string) slog.Handler {
	return l.base.WithAttrs(l.attrs()).WithGroup(name)
}

func (l *sessionLog) attrs() []slog.Attr {
	s := l.s
	as := make([]slog.Attr, 0, 10)
	as = append(as, slog.Uint64("session", s.id), slog.String("client", s.client))
	if s.logStage >= logLoggedIn {
		as = append(as, slog.String("user", s.logUser), slog.String("database", s.logDatabase), slog.String("app", s.logApp), slog.String("client_encryption", string(s.mode)))
	}
	if s.logStage >= logRouted {
		as = append(as, slog.String("bucket", s.bucket), slog.Int("rule", s.logRule))
	}
	return as
}
