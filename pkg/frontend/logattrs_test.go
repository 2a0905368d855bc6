package frontend

import (
	"bytes"
	"log/slog"
	"regexp"
	"testing"
)

// TestSessionLogAsWith: a session's log lines through sessionLog read as
// they did through slog's With, at each stage of the session, for the text
// and JSON handlers, with the base logger's own attributes and groups, and
// through a logger derived from the session's.
func TestSessionLogAsWith(t *testing.T) {
	stamp := regexp.MustCompile(`time=\S+ |"time":"[^"]+",`)
	for _, kind := range []string{"text", "json"} {
		var got, want bytes.Buffer
		mk := func(b *bytes.Buffer) *slog.Logger {
			var h slog.Handler = slog.NewTextHandler(b, nil)
			if kind == "json" {
				h = slog.NewJSONHandler(b, nil)
			}
			return slog.New(h).With("instance", "i1").WithGroup("g")
		}
		s := &session{id: 7, client: "127.0.0.1:5000", mode: ModeLogin}
		lg := newSessionLog(mk(&got), s)
		wl := mk(&want).With("session", s.id, "client", s.client)
		lg.Info("accepted", "k", 1)
		wl.Info("accepted", "k", 1)
		s.logUser, s.logDatabase, s.logApp, s.logStage = "u", "db", "app", logLoggedIn
		wl = wl.With("user", "u", "database", "db", "app", "app", "client_encryption", string(s.mode))
		lg.Warn("logged in")
		wl.Warn("logged in")
		s.bucket, s.logRule, s.logStage = "b1", 3, logRouted
		wl = wl.With("bucket", "b1", "rule", 3)
		lg.Info("closed", "outcome", "ok", "bytes_in", int64(5))
		wl.Info("closed", "outcome", "ok", "bytes_in", int64(5))
		lg.With("x", true).WithGroup("h").Info("derived", "y", 2)
		wl.With("x", true).WithGroup("h").Info("derived", "y", 2)
		g, w := stamp.ReplaceAllString(got.String(), ""), stamp.ReplaceAllString(want.String(), "")
		if g != w || w == "" {
			t.Errorf("%s: sessionLog wrote\n%s\nWith wrote\n%s", kind, g, w)
		}
	}
}
