package config

import (
	"fmt"
	"sync"

	"github.com/tdsgate/tdsgate/pkg/route/passhash"
)

// DemoPasswords are the sa passwords of the demo's three SQL Servers, in
// bucket order. They are published in the runbook (section 6), which is
// the only reason they appear here: real configs carry only hashes, made
// by `proxy hash-password`.
var DemoPasswords = [3]string{"YourStr0ngP@ssword1", "YourStr0ngP@ssword2", "YourStr0ngP@ssword3"}

// DemoDatabase is the database the demo's credential routes match.
const DemoDatabase = "tenant_db"

var (
	demoHashesOnce sync.Once
	demoHashes     [3]string
)

// Demo returns the built-in configuration of `make demo`: the proxy on
// 127.0.0.1:1433 in front of three buckets, bucket-001..003 at
// 127.0.0.1:14331..14333 (backend encryption login, certificate trusted,
// 20 connections, a queue of 10 with a 30 s timeout), no Redis, health on
// 127.0.0.1:8081 and metrics on 127.0.0.1:9091.
//
// Its routes are three credential rules for user sa and database
// tenant_db: each of DemoPasswords leads to its bucket, and nothing else
// matches (there is no default bucket), as in the runbook. The hashes are
// computed from DemoPasswords on the first call (a few milliseconds each).
// Environment overrides are not applied. Each call returns a fresh copy.
func Demo() *Config {
	demoHashesOnce.Do(func() {
		for i, pw := range DemoPasswords {
			h, err := passhash.New(pw)
			if err != nil {
				panic("config: demo hash: " + err.Error())
			}
			demoHashes[i] = h
		}
	})
	c := &Config{
		Listen:           "127.0.0.1:1433",
		ClientEncryption: append([]Encryption(nil), AllEncryptions...),
		LoginTimeout:     DefaultLoginTimeout,
		DrainTimeout:     DefaultDrainTimeout,
		LogLevel:         DefaultLogLevel,
		LogFormat:        DefaultLogFormat,
		HealthListen:     "127.0.0.1:8081",
		MetricsListen:    "127.0.0.1:9091",
		AdminListen:      DefaultAdminListen,
		Redis: Redis{
			HeartbeatTTL:      DefaultHeartbeatTTL,
			HeartbeatInterval: DefaultHeartbeatInterval,
			ReaperInterval:    DefaultReaperInterval,
			OpTimeout:         DefaultOpTimeout,
		},
	}
	for i := range DemoPasswords {
		id := fmt.Sprintf("bucket-%03d", i+1)
		c.Buckets = append(c.Buckets, Bucket{
			ID:                     id,
			Address:                fmt.Sprintf("127.0.0.1:%d", 14331+i),
			Encryption:             EncryptionLogin,
			TrustServerCertificate: true,
			MaxConnections:         20,
			MaxQueueSize:           DefaultMaxQueueSize,
			QueueTimeout:           DefaultQueueTimeout,
			DialTimeout:            DefaultDialTimeout,
			LoginTimeout:           DefaultLoginTimeout,
			Breaker:                Breaker{Failures: DefaultBreakerFailures, ProbeInterval: DefaultBreakerProbeInterval},
			PoolMode:               DefaultPoolMode,
			MinIdle:                DefaultMinIdle,
			MaxIdle:                DefaultMaxIdle,
			IdleTimeout:            DefaultIdleTimeout,
			MaxLifetime:            DefaultMaxLifetime,
			ResetTimeout:           DefaultResetTimeout,
		})
		c.Routes = append(c.Routes, Route{
			Bucket:       id,
			User:         "sa",
			Database:     DemoDatabase,
			PasswordHash: demoHashes[i],
		})
	}
	c.applyDerived()
	if c.InstanceID == "" {
		c.InstanceID = "tdsgate-demo"
	}
	if err := c.Validate(); err != nil {
		panic("config: demo config invalid: " + err.Error())
	}
	return c
}

// The demo's fourth login: user DemoMuxUser with DemoMuxPassword (a login
// of the first stand-in, added by `make demo`) goes to bucket DemoMuxBucket,
// in front of the same server as bucket-001, with pool_mode transaction
// and max_connections DemoMuxMax: many client sessions over few backend
// connections (see proxy_client_sessions against proxy_connections_active).
const (
	DemoMuxUser     = "mux"
	DemoMuxPassword = "YourStr0ngP@ssword4"
	DemoMuxBucket   = "bucket-mux"
	DemoMuxMax      = 5
)

// AddDemoMultiplexed adds the demo's fourth login to c (a Demo config):
// bucket DemoMuxBucket with pool_mode transaction at bucket-001's address,
// and a credential route for DemoMuxUser to it, first, so that the
// password routes as for the other three.
func AddDemoMultiplexed(c *Config) error {
	h, err := passhash.New(DemoMuxPassword)
	if err != nil {
		return err
	}
	b := c.Buckets[0]
	b.ID, b.PoolMode, b.MaxConnections, b.MaxQueueSize = DemoMuxBucket, PoolModeTransaction, DemoMuxMax, 1000
	c.Buckets = append(c.Buckets, b)
	c.Routes = append([]Route{{Bucket: DemoMuxBucket, User: DemoMuxUser, Database: DemoDatabase, PasswordHash: h}}, c.Routes...)
	c.applyDerived()
	return c.Validate()
}
