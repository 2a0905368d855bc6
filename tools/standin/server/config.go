package server

import (
	"crypto/tls"
	"fmt"
	"time"
)

// Encryption settings of the stand-in.
const (
	// EncryptionOptional answers each client's choice as a SQL Server
	// without "Force Encryption" does: login-only TLS for OFF, full TLS
	// for ON/REQ, none for NOT_SUP.
	EncryptionOptional = "optional"
	// EncryptionForce is SQL Server's "Force Encryption": full TLS for
	// every client; a client that cannot do TLS is refused.
	EncryptionForce = "force"
)

// Defaults.
const (
	DefaultServerName = "STANDIN"
	// DefaultLoginTimeout bounds every read until login completes.
	DefaultLoginTimeout = 30 * time.Second
	// DefaultProductVersion is what LOGINACK and @@VERSION report: SQL Server 2022 RTM.
	DefaultProductVersion = "16.0.1000.6"
)

// Config configures a stand-in server.
type Config struct {
	// Name is @@SERVERNAME and the server name in ERROR tokens.
	Name string `yaml:"name"`
	// Listen is the TCP address, e.g. "127.0.0.1:14331" ("127.0.0.1:0": any free port).
	Listen string `yaml:"listen"`
	// Logins maps user names to passwords.
	Logins map[string]string `yaml:"logins"`
	// Databases maps database names to init SQL run when the database is created.
	Databases map[string]string `yaml:"databases"`
	// DefaultDatabase is used when a login names none ("" = "master").
	DefaultDatabase string `yaml:"default_database"`
	// DataDir holds the SQLite files ("" = a temporary directory removed at Close).
	DataDir string `yaml:"data_dir"`
	// Encryption is EncryptionOptional (default) or EncryptionForce.
	Encryption string `yaml:"encryption"`
	// CertFile and KeyFile name a PEM certificate; empty: a self-signed one generated at start.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MaxConnections refuses logins past this many sessions with error 17809 (0: no limit).
	MaxConnections int `yaml:"max_connections"`
	// StatsListen, if set, serves GET /stats (JSON counters) on this address.
	StatsListen string `yaml:"stats_listen"`
	// LoginTimeout bounds reads until login completes (0: DefaultLoginTimeout).
	LoginTimeout time.Duration `yaml:"login_timeout"`
	// BulkSource answers the batch "-- standin:bulk <bytes>" with about
	// that many bytes of rows streamed from memory (BulkPrefix), for
	// benchmarks whose source must outrun the relay. Off: the batch is a
	// comment, and answers nothing.
	BulkSource bool `yaml:"bulk_source"`
	// TLS overrides the generated or loaded certificate (tests).
	TLS *tls.Config `yaml:"-"`
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		c.Name = DefaultServerName
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.Encryption == "" {
		c.Encryption = EncryptionOptional
	}
	if c.Encryption != EncryptionOptional && c.Encryption != EncryptionForce {
		return fmt.Errorf("standin: encryption: %q is neither %q nor %q", c.Encryption, EncryptionOptional, EncryptionForce)
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = DefaultLoginTimeout
	}
	if c.DefaultDatabase == "" {
		c.DefaultDatabase = "master"
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("standin: cert_file and key_file go together")
	}
	return nil
}
