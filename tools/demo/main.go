// Command demo is `make demo`: three SQL Server stand-ins on
// 127.0.0.1:14331-14333 and a tdsgate instance on 127.0.0.1:1433 with the
// embedded demo config (no Redis), in one process. It prints how to
// connect with FreeTDS tsql; Ctrl-C stops everything.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/standin/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := config.Demo()
	if err := config.AddDemoMultiplexed(cfg); err != nil {
		return err
	}
	logFile, err := os.CreateTemp("", "tdsgate-demo-*.log")
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg, logFile)
	quiet := slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for i := 1; i <= 3; i++ {
		sc := server.RunbookConfig(i, fmt.Sprintf("127.0.0.1:%d", 14330+i))
		if i == 1 {
			sc.Logins[config.DemoMuxUser] = config.DemoMuxPassword // the fourth login (pool_mode transaction)
		}
		s, err := server.Start(sc, quiet)
		if err != nil {
			return fmt.Errorf("stand-in %d: %w (is something already on port %d? stop it, or run `make stack-down`)", i, err, 14330+i)
		}
		defer s.Close()
	}
	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		return fmt.Errorf("%w (is something already on %s?)", err, cfg.Listen)
	}
	fmt.Printf(`tdsgate demo is up: the proxy on %s in front of three stand-in buckets (no Redis).

  bucket-001  stand-in sqlserver-bucket-1  127.0.0.1:14331  sa / YourStr0ngP@ssword1
  bucket-002  stand-in sqlserver-bucket-2  127.0.0.1:14332  sa / YourStr0ngP@ssword2
  bucket-003  stand-in sqlserver-bucket-3  127.0.0.1:14333  sa / YourStr0ngP@ssword3
  bucket-mux  stand-in sqlserver-bucket-1  127.0.0.1:14331  mux / YourStr0ngP@ssword4
              pool_mode transaction, max_connections 5: many sessions share few backends

The password routes the login to its bucket. Try, with FreeTDS tsql (apt-get install freetds-bin):

  tsql -H 127.0.0.1 -p 1433 -U sa -P 'YourStr0ngP@ssword1' -D tenant_db
  1> SELECT 'bucket-1' AS bucket, @@SERVERNAME AS server
  2> go

  echo "SELECT TOP 5 * FROM test_table ORDER BY id DESC
go" | tsql -H 127.0.0.1 -p 1433 -U sa -P 'YourStr0ngP@ssword2' -D tenant_db

Transaction pooling: log in as mux and watch proxy_client_sessions{bucket="bucket-mux"} against
proxy_connections_active{bucket="bucket-mux"} on http://127.0.0.1:9091/metrics.

Limits: max_connections 20 per bucket, max_queue_size 10, queue_timeout 30s (errors 50004/50005).
Logs: %s
Ctrl-C stops everything.
`, a.Addr(), logFile.Name())
	<-ctx.Done()
	fmt.Println("\nstopping…")
	return a.Shutdown(context.Background())
}
