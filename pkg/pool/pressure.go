package pool

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Pressure carries "clients wait for a slot of this bucket" between
// instances, so that an instance holding idle connections of the bucket
// closes them and their slots go where clients wait.
type Pressure interface {
	// Publish tells the other instances that clients wait for bucket. It
	// must not block.
	Publish(bucket string)
	// Close stops it.
	Close()
}

// NopPressure is the Pressure of a standalone instance: nobody to tell.
type NopPressure struct{}

// Publish does nothing.
func (NopPressure) Publish(string) {}

// Close does nothing.
func (NopPressure) Close() {}

// Redis pub/sub channels of pressure.
const (
	// ChanPressurePrefix + bucket id is a bucket's pressure channel; the
	// message is the publishing instance's id.
	ChanPressurePrefix = "proxy:pressure:"
	// ChanPressurePattern matches every bucket's pressure channel.
	ChanPressurePattern = ChanPressurePrefix + "*"
	// pressureMinGap spaces one instance's publications for one bucket.
	pressureMinGap = 100 * time.Millisecond
)

// RedisPressure publishes and receives pressure on the Redis channels
// proxy:pressure:<bucket> with rueidis pub/sub.
type RedisPressure struct {
	client   rueidis.Client
	instance string
	on       func(bucket string)
	log      *slog.Logger
	timeout  time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	last map[string]time.Time // last publication per bucket
	kick chan struct{}
	want map[string]bool // buckets to publish
}

// NewRedisPressure subscribes to every bucket's pressure channel and
// calls on(bucket) for each signal another instance publishes. timeout
// bounds each PUBLISH.
func NewRedisPressure(client rueidis.Client, instanceID string, timeout time.Duration, log *slog.Logger, on func(bucket string)) *RedisPressure {
	if log == nil {
		log = slog.Default()
	}
	if timeout <= 0 {
		timeout = 500 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	rp := &RedisPressure{client: client, instance: instanceID, on: on, log: log, timeout: timeout, ctx: ctx, cancel: cancel,
		last: map[string]time.Time{}, kick: make(chan struct{}, 1), want: map[string]bool{}}
	rp.wg.Add(2)
	go rp.subscribe()
	go rp.publisher()
	return rp
}

// Publish queues a signal for bucket (at most one per pressureMinGap).
func (rp *RedisPressure) Publish(bucket string) {
	rp.mu.Lock()
	if time.Since(rp.last[bucket]) < pressureMinGap {
		rp.mu.Unlock()
		return
	}
	rp.last[bucket] = time.Now()
	rp.want[bucket] = true
	rp.mu.Unlock()
	select {
	case rp.kick <- struct{}{}:
	default:
	}
}

func (rp *RedisPressure) publisher() {
	defer rp.wg.Done()
	for {
		select {
		case <-rp.ctx.Done():
			return
		case <-rp.kick:
		}
		rp.mu.Lock()
		buckets := make([]string, 0, len(rp.want))
		for b := range rp.want {
			buckets = append(buckets, b)
		}
		clear(rp.want)
		rp.mu.Unlock()
		for _, b := range buckets {
			ctx, cancel := context.WithTimeout(rp.ctx, rp.timeout)
			err := rp.client.Do(ctx, rp.client.B().Publish().Channel(ChanPressurePrefix+b).Message(rp.instance).Build()).Error()
			cancel()
			if err != nil && rp.ctx.Err() == nil {
				rp.log.Debug("pool: pressure publish failed", "bucket", b, "err", err)
			}
		}
	}
}

func (rp *RedisPressure) subscribe() {
	defer rp.wg.Done()
	for {
		err := rp.client.Receive(rp.ctx, rp.client.B().Psubscribe().Pattern(ChanPressurePattern).Build(), func(m rueidis.PubSubMessage) {
			if m.Message == rp.instance {
				return
			}
			if b, ok := strings.CutPrefix(m.Channel, ChanPressurePrefix); ok && b != "" {
				rp.on(b)
			}
		})
		if rp.ctx.Err() != nil {
			return
		}
		rp.log.Debug("pool: pressure subscription ended, resubscribing", "err", err)
		select {
		case <-rp.ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// Close unsubscribes and stops publishing.
func (rp *RedisPressure) Close() {
	rp.cancel()
	rp.wg.Wait()
}
