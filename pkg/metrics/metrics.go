package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/relay"
)

// Metric names.
const (
	NameConnectionsActive   = "proxy_connections_active"
	NameConnectionsIdle     = "proxy_connections_idle"
	NameConnectionsTotal    = "proxy_connections_total"
	NameQueueLength         = "proxy_queue_length"
	NameQueueWait           = "proxy_queue_wait_duration_seconds"
	NameQueueAbandoned      = "proxy_queue_abandoned_total"
	NameBackendConnect      = "proxy_backend_connect_duration_seconds"
	NameGlobalConnections   = "proxy_bucket_global_connections"
	NameGlobalMax           = "proxy_bucket_global_max"
	NameBreakerOpen         = "proxy_breaker_open"
	NameRejections          = "proxy_rejections_total"
	NameEBPFConnections     = "proxy_ebpf_backend_connections"
	NameEBPFDrift           = "proxy_ebpf_drift"
	NameConnectionErrors    = "proxy_connection_errors_total"
	NameRedisOperations     = "proxy_redis_operations_total"
	NameInstanceHeartbeat   = "proxy_instance_heartbeat"
	NameFallbackMode        = "proxy_fallback_mode"
	NameRelayBytes          = "proxy_relay_bytes_total"
	NameSessions            = "proxy_sessions_total"
	NameHeaderWalks         = "proxy_header_walks_total"
	DirectionClientToServer = "client_to_server"
	DirectionServerToClient = "server_to_client"
)

// Redis operations and results counted by proxy_redis_operations_total.
const (
	OpAcquire   = "acquire"
	OpRelease   = "release"
	OpReclaim   = "reclaim"
	OpReconcile = "reconcile"
	OpHeartbeat = "heartbeat"
)

// RedisOps lists the operations whose counters exist from the start.
var RedisOps = []string{OpAcquire, OpRelease, OpReclaim, OpReconcile, OpHeartbeat}

// Connection error reasons (proxy_connection_errors_total{reason}).
const (
	ReasonClientHandshake = "client_handshake"
	ReasonBackendDial     = "backend_dial"
	ReasonBackendPrelogin = "backend_prelogin"
	ReasonBackendTLS      = "backend_tls"
	ReasonBackendLogin    = "backend_login"
	ReasonBackendOther    = "backend_other"
	ReasonRelay           = "relay"
)

// ErrorReasons lists every reason, all created up front.
var ErrorReasons = []string{ReasonClientHandshake, ReasonBackendDial, ReasonBackendPrelogin, ReasonBackendTLS, ReasonBackendLogin, ReasonBackendOther, ReasonRelay}

// Rejection codes counted per bucket: tdsgate's refusal numbers.
const (
	firstCode = 50001
	lastCode  = 50011
)

// Histogram upper bounds, in seconds.
var (
	// QueueWaitBuckets reach past the default queue_timeout (30 s).
	QueueWaitBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// BackendConnectBuckets cover a LAN login (ms) to a dial timeout (s).
	BackendConnectBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// bucketMetrics are one bucket's metric objects.
type bucketMetrics struct {
	id         string
	active     *vm.Gauge
	idle       *vm.Gauge
	total      *vm.Counter
	queueLen   *vm.Gauge
	queueWait  *vm.PrometheusHistogram
	abandoned  *vm.Counter
	connect    *vm.PrometheusHistogram
	globalCnt  *vm.Gauge
	globalMax  *vm.Gauge
	breaker    *vm.Gauge
	rejections [lastCode - firstCode + 1]*vm.Counter
	pool       poolMetrics // pool.go
	mux        muxMetrics  // pool.go
}

// EBPFSource reads, per bucket, the kernel's count of open backend
// connections (kernel) and the slots the limiter says this instance holds
// (held: its snapshot's InUse). proxy_ebpf_backend_connections is kernel,
// proxy_ebpf_drift is kernel - held. A bucket missing from kernel is not
// watched (its address did not resolve, say) and has no proxy_ebpf_*
// series; ok false means eBPF is not running, and there are none at all.
type EBPFSource func() (kernel, held map[string]int64, ok bool)

// Metrics is one instance's metrics. It is safe for concurrent use.
type Metrics struct {
	set *vm.Set

	mu      sync.Mutex                                // serializes SetBuckets
	buckets atomic.Pointer[map[string]*bucketMetrics] // replaced whole by SetBuckets
	// unrouted counts refusals sent before a bucket was known.
	unrouted [lastCode - firstCode + 1]*vm.Counter

	errs      map[string]*vm.Counter    // by reason; fixed after New
	redis     map[[2]string]*vm.Counter // by {op, result}; fixed after New
	heartbeat *vm.Gauge
	fallback  *vm.Gauge
	// bytes[mode][0] client→server, [1] server→client; sessions[mode].
	bytes    [len(relayModes)][2]*vm.Counter
	sessions [len(relayModes)]*vm.Counter
	// walks counts the kernel header walks armed and stopped.
	walksArmed, walksStopped *vm.Counter
	door                     doorMetrics // door.go

	hookMu sync.Mutex
	hooks  []func()
	ebpf   atomic.Pointer[EBPFSource]
}

var relayModes = [...]relay.Mode{relay.ModeSplice, relay.ModeTLS, relay.ModeFramed, relay.ModeSockmap}

// New returns the metrics of an instance with the given buckets.
func New(buckets []string) *Metrics {
	m := &Metrics{set: vm.NewSet(), errs: map[string]*vm.Counter{}, redis: map[[2]string]*vm.Counter{}}
	empty := map[string]*bucketMetrics{}
	m.buckets.Store(&empty)
	for i := range m.unrouted {
		m.unrouted[i] = m.set.NewCounter(fmt.Sprintf(`%s{bucket="",code="%d"}`, NameRejections, firstCode+i))
	}
	for _, r := range ErrorReasons {
		m.errs[r] = m.set.NewCounter(fmt.Sprintf(`%s{reason=%q}`, NameConnectionErrors, r))
	}
	for _, op := range RedisOps {
		for _, res := range []string{"ok", "error"} {
			m.redis[[2]string{op, res}] = m.set.NewCounter(fmt.Sprintf(`%s{op=%q,result=%q}`, NameRedisOperations, op, res))
		}
	}
	m.door = m.newDoorMetrics()
	m.heartbeat = m.set.NewGauge(NameInstanceHeartbeat, nil)
	m.fallback = m.set.NewGauge(NameFallbackMode, nil)
	for i, mode := range relayModes {
		m.bytes[i][0] = m.set.NewCounter(fmt.Sprintf(`%s{direction=%q,mode=%q}`, NameRelayBytes, DirectionClientToServer, mode))
		m.bytes[i][1] = m.set.NewCounter(fmt.Sprintf(`%s{direction=%q,mode=%q}`, NameRelayBytes, DirectionServerToClient, mode))
		m.sessions[i] = m.set.NewCounter(fmt.Sprintf(`%s{mode=%q}`, NameSessions, mode))
	}
	m.walksArmed = m.set.NewCounter(NameHeaderWalks + `{result="armed"}`)
	m.walksStopped = m.set.NewCounter(NameHeaderWalks + `{result="stopped"}`)
	m.set.RegisterMetricsWriter(m.writeEBPF)
	m.SetBuckets(buckets)
	return m
}

// SetBuckets creates the metrics of every bucket in ids that has none yet
// (at start, and on reload). Buckets no longer configured keep theirs.
func (m *Metrics) SetBuckets(ids []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.buckets.Load()
	var next map[string]*bucketMetrics
	for _, id := range ids {
		if old[id] != nil || (next != nil && next[id] != nil) {
			continue
		}
		if next == nil {
			next = make(map[string]*bucketMetrics, len(old)+len(ids))
			for k, v := range old {
				next[k] = v
			}
		}
		next[id] = m.newBucket(id)
	}
	if next != nil {
		m.buckets.Store(&next)
	}
}

func (m *Metrics) newBucket(id string) *bucketMetrics {
	l := fmt.Sprintf(`{bucket="%s"}`, escape(id))
	b := &bucketMetrics{
		id:        id,
		active:    m.set.NewGauge(NameConnectionsActive+l, nil),
		idle:      m.set.NewGauge(NameConnectionsIdle+l, nil),
		total:     m.set.NewCounter(NameConnectionsTotal + l),
		queueLen:  m.set.NewGauge(NameQueueLength+l, nil),
		queueWait: m.set.NewPrometheusHistogramExt(NameQueueWait+l, QueueWaitBuckets),
		abandoned: m.set.NewCounter(NameQueueAbandoned + l),
		connect:   m.set.NewPrometheusHistogramExt(NameBackendConnect+l, BackendConnectBuckets),
		globalCnt: m.set.NewGauge(NameGlobalConnections+l, nil),
		globalMax: m.set.NewGauge(NameGlobalMax+l, nil),
		breaker:   m.set.NewGauge(NameBreakerOpen+l, nil),
	}
	for i := range b.rejections {
		b.rejections[i] = m.set.NewCounter(fmt.Sprintf(`%s{bucket="%s",code="%d"}`, NameRejections, escape(id), firstCode+i))
	}
	b.pool = m.newPoolMetrics(id)
	b.mux = m.newMuxMetrics(id)
	return b
}

// escape makes s a Prometheus label value (bucket ids are validated to
// letters, digits, '.', '_' and '-', so this is belt and braces).
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

func (m *Metrics) bucket(id string) *bucketMetrics { return (*m.buckets.Load())[id] }

// Buckets lists the buckets that have metrics, sorted.
func (m *Metrics) Buckets() []string {
	bm := *m.buckets.Load()
	out := make([]string, 0, len(bm))
	for id := range bm {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// --- limiter.Observer ---

var _ limiter.Observer = (*Metrics)(nil)

// Acquired counts an admitted login and its wait.
func (m *Metrics) Acquired(bucket string, waited time.Duration, _ bool) {
	if b := m.bucket(bucket); b != nil {
		b.active.Inc()
		b.total.Inc()
		b.queueWait.Update(waited.Seconds())
	}
}

// Released gives a slot back.
func (m *Metrics) Released(bucket string) {
	if b := m.bucket(bucket); b != nil {
		b.active.Dec()
	}
}

// Enqueued records the queue length seen by the newcomer; the scrape hook
// corrects it from the limiter's snapshot.
func (m *Metrics) Enqueued(bucket string, n int) {
	if b := m.bucket(bucket); b != nil {
		b.queueLen.Set(float64(n))
	}
}

// Rejected is counted by the frontend's Refused (with the TDS number the
// client saw), not here.
func (m *Metrics) Rejected(string, limiter.Code) {}

// Canceled counts a client that left the queue.
func (m *Metrics) Canceled(bucket string, _ time.Duration) {
	if b := m.bucket(bucket); b != nil {
		b.abandoned.Inc()
	}
}

// --- frontend.Observer ---

// Relayed counts a relayed session and its bytes.
func (m *Metrics) Relayed(_ string, mode string, c2s, s2c int64, _ time.Duration) {
	i := modeIndex(mode)
	if i < 0 {
		return
	}
	m.sessions[i].Inc()
	m.bytes[i][0].AddInt64(c2s)
	m.bytes[i][1].AddInt64(s2c)
}

func modeIndex(mode string) int {
	switch mode {
	case "splice":
		return 0
	case "tls":
		return 1
	case "framed":
		return 2
	case "sockmap":
		return 3
	}
	return -1
}

// Refused counts a refusal with its TDS error number.
func (m *Metrics) Refused(bucket string, number int32, _ string) {
	i := int(number) - firstCode
	if i < 0 || i > lastCode-firstCode {
		return
	}
	if b := m.bucket(bucket); b != nil {
		b.rejections[i].Inc()
		return
	}
	m.unrouted[i].Inc()
}

// BackendConnected observes a backend login's duration, or counts its
// failure by stage.
func (m *Metrics) BackendConnected(bucket string, d time.Duration, err error) {
	if err != nil {
		m.errs[backendReason(err)].Inc()
		return
	}
	if b := m.bucket(bucket); b != nil {
		b.connect.Update(d.Seconds())
	}
}

func backendReason(err error) string {
	var be *backend.Error
	if errors.As(err, &be) {
		switch be.Stage {
		case backend.StageDial:
			return ReasonBackendDial
		case backend.StagePrelogin:
			return ReasonBackendPrelogin
		case backend.StageTLS:
			return ReasonBackendTLS
		case backend.StageLogin:
			return ReasonBackendLogin
		}
	}
	return ReasonBackendOther
}

// ClientHandshake counts a failed client handshake (PRELOGIN, TLS,
// LOGIN7), refusals included.
func (m *Metrics) ClientHandshake(_ string, err error) {
	if err != nil {
		m.errs[ReasonClientHandshake].Inc()
	}
}

// RelayError counts a session whose relay ended with an error (not a
// clean close by either side).
func (m *Metrics) RelayError(string, string, error) { m.errs[ReasonRelay].Inc() }

// HeaderWalkArmed counts a kernel header walk started for a pooled
// session (header_walk: kernel).
func (m *Metrics) HeaderWalkArmed() { m.walksArmed.Inc() }

// HeaderWalks returns the kernel header walks armed and stopped so far.
func (m *Metrics) HeaderWalks() (armed, stopped uint64) {
	return m.walksArmed.Get(), m.walksStopped.Get()
}

// HeaderWalkStopped counts a kernel header walk that stopped before its
// session ended (a gap, a header it refused): the session peeked from
// there.
func (m *Metrics) HeaderWalkStopped() { m.walksStopped.Inc() }

// --- Redis, registry, breaker, eBPF hooks ---

// RedisOp counts a Redis operation (one of RedisOps); err nil is "ok".
// An unknown op is ignored.
func (m *Metrics) RedisOp(op string, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	if c := m.redis[[2]string{op, res}]; c != nil {
		c.Inc()
	}
}

// Heartbeat records a successful heartbeat at t.
func (m *Metrics) Heartbeat(t time.Time) { m.heartbeat.Set(float64(t.Unix())) }

// SetFallback says whether the limiter runs on its local share.
func (m *Metrics) SetFallback(on bool) { m.fallback.Set(b2f(on)) }

// SetGlobal records a bucket's global count and cap as last seen.
func (m *Metrics) SetGlobal(bucket string, count, max int) {
	if b := m.bucket(bucket); b != nil {
		b.globalCnt.Set(float64(count))
		b.globalMax.Set(float64(max))
	}
}

// SetQueueLength sets a bucket's queue length.
func (m *Metrics) SetQueueLength(bucket string, n int) {
	if b := m.bucket(bucket); b != nil {
		b.queueLen.Set(float64(n))
	}
}

// SetIdle sets a bucket's idle pooled backend count.
func (m *Metrics) SetIdle(bucket string, n int) {
	if b := m.bucket(bucket); b != nil {
		b.idle.Set(float64(n))
	}
}

// SetBreakerOpen sets a bucket's breaker state.
func (m *Metrics) SetBreakerOpen(bucket string, open bool) {
	if b := m.bucket(bucket); b != nil {
		b.breaker.Set(b2f(open))
	}
}

// Active is proxy_connections_active of a bucket.
func (m *Metrics) Active(bucket string) int64 {
	if b := m.bucket(bucket); b != nil {
		return int64(b.active.Get())
	}
	return 0
}

// SetEBPF sets the source of the proxy_ebpf_* series (nil: none).
func (m *Metrics) SetEBPF(src EBPFSource) {
	if src == nil {
		m.ebpf.Store(nil)
		return
	}
	m.ebpf.Store(&src)
}

// OnScrape adds a hook run at the start of every Write, to set values
// read rather than tracked (queue lengths, breakers, global counts).
func (m *Metrics) OnScrape(f func()) {
	m.hookMu.Lock()
	m.hooks = append(m.hooks, f)
	m.hookMu.Unlock()
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// writeEBPF writes the eBPF series while a source reports ok; they are
// built at scrape time because they exist only while eBPF runs.
func (m *Metrics) writeEBPF(w io.Writer) {
	p := m.ebpf.Load()
	if p == nil {
		return
	}
	kernel, held, ok := (*p)()
	if !ok {
		return
	}
	var ids []string
	for _, id := range m.Buckets() {
		if _, watched := kernel[id]; watched {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return
	}
	// One family after the other (the text format wants each in one group).
	vm.WriteMetadataIfNeeded(w, NameEBPFConnections, "gauge")
	for _, id := range ids {
		fmt.Fprintf(w, "%s{bucket=\"%s\"} %d\n", NameEBPFConnections, escape(id), kernel[id])
	}
	vm.WriteMetadataIfNeeded(w, NameEBPFDrift, "gauge")
	for _, id := range ids {
		fmt.Fprintf(w, "%s{bucket=\"%s\"} %d\n", NameEBPFDrift, escape(id), kernel[id]-held[id])
	}
}

// Set is the underlying metric set.
func (m *Metrics) Set() *vm.Set { return m.set }

// Write runs the scrape hooks, then writes every metric of the instance
// and the process's (process_*, go_*) in the Prometheus text format, each
// family with its HELP and TYPE lines (help.go).
func (m *Metrics) Write(w io.Writer) {
	m.hookMu.Lock()
	hooks := slices.Clone(m.hooks)
	m.hookMu.Unlock()
	for _, f := range hooks {
		f()
	}
	var doc bytes.Buffer
	m.set.WritePrometheus(&doc)
	vm.WriteProcessMetrics(&doc)
	writeWithHelp(w, doc.Bytes())
}
