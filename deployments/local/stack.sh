#!/usr/bin/env bash
# deployments/local/stack.sh: the runbook's stack without Docker, on the
# runbook's ports, every process on 127.0.0.1.
#
#   stack.sh up                  check every port, start everything, wait until healthy, print the ports
#   stack.sh down                stop everything; no process and no proxy:* key left behind
#   stack.sh status              what runs, with pids and health
#   stack.sh logs                follow the proxies' log files
#   stack.sh start|stop|kill|restart COMPONENT   one component (the scenario runner uses these)
#   stack.sh wait COMPONENT      wait until COMPONENT is healthy
#   stack.sh pid COMPONENT       print its pid (exit 1 if not running)
#
# Components: bucket-1 bucket-2 bucket-3 (tools/standin stand-ins), redis,
# proxy-1 proxy-2 proxy-3 (bin/proxy), haproxy, prometheus (when installed and
# deployments/prometheus/prometheus.local.yml exists).
# `stop` is SIGTERM and waits for the exit; `kill` is SIGKILL.
# Pids and logs: deployments/local/.run/ (gitignored). `make stack-up` builds
# bin/proxy and bin/standin first; this script builds them only if missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
run="$here/.run"
rel_run="deployments/local/.run"
PROM_CONFIG="deployments/prometheus/prometheus.local.yml"

BUCKETS=(bucket-1 bucket-2 bucket-3)
PROXIES=(proxy-1 proxy-2 proxy-3)
ALL=(bucket-1 bucket-2 bucket-3 redis proxy-1 proxy-2 proxy-3 haproxy prometheus)

die() { echo "stack: $*" >&2; exit 1; }
say() { echo "stack: $*"; }

n_of() { echo "${1##*-}"; } # bucket-2 → 2, proxy-3 → 3

# ports COMPONENT: every TCP port the component listens on.
ports() {
	case "$1" in
	bucket-[123]) echo "1433$(n_of "$1") 1434$(n_of "$1")" ;;
	redis) echo 6379 ;;
	proxy-[123]) local n; n=$(n_of "$1"); echo "$((11442 + n)) 1808$n 1909$n" ;;
	haproxy) echo "1433 8404 11433 11434 11435" ;;
	prometheus) echo 9090 ;;
	*) die "unknown component $1 (one of: ${ALL[*]})" ;;
	esac
}

prometheus_enabled() { command -v prometheus >/dev/null 2>&1 && [[ -f "$PROM_CONFIG" ]]; }

pidfile() { echo "$run/$1.pid"; }
logfile() { echo "$run/$1.log"; }

# pid_of COMPONENT: the pid from its pid file if that process is alive and
# is still the program we started (not a recycled pid).
pid_of() {
	local f pid exe
	f=$(pidfile "$1")
	[[ -f "$f" ]] || return 1
	pid=$(<"$f")
	[[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	exe=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
	case "$1" in
	bucket-*) [[ "$exe" == *standin* ]] ;;
	redis) [[ "$exe" == *redis-server* ]] ;;
	proxy-*) [[ "$exe" == *proxy* ]] ;;
	haproxy) [[ "$exe" == *haproxy* ]] ;;
	prometheus) [[ "$exe" == *prometheus* ]] ;;
	esac || return 1
	echo "$pid"
}

# port_user PORT: "name (pid N)" of the process listening on PORT, or empty.
port_user() {
	local line
	if ! command -v ss >/dev/null 2>&1; then
		# No iproute2: we can tell the port is taken, not by whom.
		if tcp_open "$1"; then echo "another process"; fi
		return 0
	fi
	line=$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n1) || true
	[[ -n "$line" ]] || return 0
	if [[ "$line" =~ users:\(\(\"([^\"]+)\",pid=([0-9]+) ]]; then
		echo "${BASH_REMATCH[1]} (pid ${BASH_REMATCH[2]})"
	else
		echo "another process"
	fi
}

# alive PID: the process exists and is not a zombie (an exited child that
# nobody reaped yet counts as gone).
alive() {
	local state
	kill -0 "$1" 2>/dev/null || return 1
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ "$state" != Z ]]
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# listening PORT: something listens on 127.0.0.1:PORT, found without
# connecting (a proxy refuses, and logs, a connection from anyone but
# HAProxy). Without iproute2's ss: assume yes (/health/live is up).
listening() {
	command -v ss >/dev/null 2>&1 || return 0
	[[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]
}

# healthy COMPONENT: one check, no waiting.
healthy() {
	local n
	case "$1" in
	bucket-*) tcp_open "1433$(n_of "$1")" ;;
	redis) [[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" == PONG ]] ;;
	proxy-*)
		n=$(n_of "$1")
		curl -sf -o /dev/null "http://127.0.0.1:1808$n/health/live" && listening "$((11442 + n))"
		;;
	haproxy)
		# Stats answer, and every proxy that runs is UP in the backend.
		local csv p
		csv=$(curl -sf "http://127.0.0.1:8404/stats;csv" 2>/dev/null) || return 1
		for p in "${PROXIES[@]}"; do
			if pid_of "$p" >/dev/null; then
				grep -q "^tdsgate,$p,.*,UP," <<<"$csv" || return 1
			fi
		done
		;;
	prometheus) curl -sf -o /dev/null "http://127.0.0.1:9090/-/ready" ;;
	esac
}

wait_healthy() {
	local c=$1 timeout=${2:-30} i t0=$SECONDS
	for ((i = 0; i < timeout * 10; i++)); do
		if healthy "$c"; then
			say "$c healthy (pid $(pid_of "$c"), $((SECONDS - t0))s)"
			return 0
		fi
		if ! pid_of "$c" >/dev/null; then
			echo "stack: $c exited; last lines of $(logfile "$c"):" >&2
			tail -n 20 "$(logfile "$c")" >&2 || true
			return 1
		fi
		sleep 0.1
	done
	echo "stack: $c not healthy after ${timeout}s; last lines of $(logfile "$c"):" >&2
	tail -n 20 "$(logfile "$c")" >&2 || true
	return 1
}

ensure_binaries() {
	[[ -x bin/proxy ]] || { say "building bin/proxy"; go build -o bin/proxy ./cmd/proxy/; }
	[[ -x bin/standin ]] || { say "building bin/standin"; go build -o bin/standin ./tools/standin/; }
	ensure_tls
}

# The stack's one TLS certificate (self-signed, for localhost, 127.0.0.1
# and ::1), shown by every stand-in and proxy. A client verifies them all by
# trusting it as a CA: SSL_CERT_FILE=deployments/local/.run/tls/cert.pem for
# go-mssqldb and sqlcmd (-N m / -N s without -C). Kept across stack-down.
TLS_DIR="$rel_run/tls"
ensure_tls() {
	[[ -s "$TLS_DIR/cert.pem" && -s "$TLS_DIR/key.pem" ]] && return 0
	bin/standin -write-cert "$TLS_DIR"
}

# launch COMPONENT CMD...: start CMD in its own session, stdin from
# /dev/null, output appended to the component's log; record its pid.
launch() {
	local c=$1
	shift
	mkdir -p "$run"
	local pf
	pf=$(pidfile "$c")
	rm -f "$pf"
	echo "=== $(date -u +%FT%TZ) start: $*" >>"$(logfile "$c")"
	# setsid forks when its caller leads a process group: the pid is
	# written by the process itself, just before it execs the command.
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pf" "$@" </dev/null >>"$(logfile "$c")" 2>&1 &
	local i
	for ((i = 0; i < 500; i++)); do
		[[ -s "$pf" ]] && return 0
		sleep 0.02
	done
	die "$c: no pid written to $pf"
}

start() {
	local c=$1 n pid
	if pid=$(pid_of "$c"); then
		say "$c already running (pid $pid)"
		return 0
	fi
	local p u
	for p in $(ports "$c"); do
		u=$(port_user "$p")
		[[ -z "$u" ]] || die "port $p is in use by $u: stop it or run make stack-down"
	done
	case "$c" in
	bucket-*)
		n=$(n_of "$c")
		mkdir -p "$run/data/bucket-$n"
		ensure_tls
		launch "$c" bin/standin -config "deployments/local/standin-$n.yaml" -cert "$TLS_DIR/cert.pem" -key "$TLS_DIR/key.pem"
		;;
	redis)
		# Our private Redis: no RDB, no AOF; a restart starts empty.
		launch "$c" redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
			--daemonize no --dir "$rel_run" --logfile ""
		;;
	proxy-*)
		# The configs name every address; drop env overrides from the caller's shell.
		ensure_tls
		launch "$c" env -u INSTANCE_ID -u LISTEN_ADDR -u REDIS_ADDR -u HEALTH_ADDR -u METRICS_ADDR \
			-u LISTENERS -u LOG_LEVEL TLS_CERT_FILE="$TLS_DIR/cert.pem" TLS_KEY_FILE="$TLS_DIR/key.pem" \
			bin/proxy -config "deployments/local/$c.yaml"
		;;
	haproxy)
		haproxy -q -c -f deployments/local/haproxy.cfg || die "deployments/local/haproxy.cfg is invalid"
		launch "$c" haproxy -db -f deployments/local/haproxy.cfg
		;;
	prometheus)
		if ! command -v prometheus >/dev/null 2>&1; then
			say "prometheus: not installed (apt-get install prometheus), skipped"
			return 0
		fi
		if [[ ! -f "$PROM_CONFIG" ]]; then
			say "prometheus: $PROM_CONFIG does not exist yet, skipped"
			return 0
		fi
		mkdir -p "$run/prometheus"
		launch "$c" prometheus --config.file="$PROM_CONFIG" --storage.tsdb.path="$rel_run/prometheus" \
			--web.listen-address=127.0.0.1:9090 --storage.tsdb.retention.time=1d
		;;
	esac
}

# stop COMPONENT [SIGNAL]: signal it, wait for the exit (SIGKILL after 30 s).
stop() {
	local c=$1 sig=${2:-TERM} pid i t0=$SECONDS
	pid=$(pid_of "$c") || { rm -f "$(pidfile "$c")"; return 0; }
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < 300; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		echo "stack: $c (pid $pid) still running 30s after SIG$sig: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	echo "=== $(date -u +%FT%TZ) stopped (SIG$sig)" >>"$(logfile "$c")"
	rm -f "$(pidfile "$c")"
	say "$c stopped (SIG$sig, pid $pid, $((SECONDS - t0))s)"
}

redis_proxy_keys() { redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'proxy:*' 2>/dev/null || true; }

print_ports() {
	cat <<'EOF'

| Serviço | Porta host | Uso |
|---|---|---|
| HAProxy (TDS) | `localhost:1433` | Porta principal — conecte aqui |
| SQL Server 1 (stand-in) | `localhost:14331` | Acesso direto ao bucket-1 |
| SQL Server 2 (stand-in) | `localhost:14332` | Acesso direto ao bucket-2 |
| SQL Server 3 (stand-in) | `localhost:14333` | Acesso direto ao bucket-3 |
| Redis | `localhost:6379` | Coordenação distribuída |
| Proxy 1 Health | `localhost:18081` | Health check proxy-1 |
| Proxy 2 Health | `localhost:18082` | Health check proxy-2 |
| Proxy 3 Health | `localhost:18083` | Health check proxy-3 |
| Proxy 1 Metrics | `localhost:19091` | Prometheus metrics proxy-1 |
| Proxy 2 Metrics | `localhost:19092` | Prometheus metrics proxy-2 |
| Proxy 3 Metrics | `localhost:19093` | Prometheus metrics proxy-3 |
| HAProxy Stats | `localhost:8404` | Dashboard HAProxy (/stats) |
| Prometheus | `localhost:9090` | UI Prometheus (if installed) |
| Proxy 1-3 TDS | `localhost:11433-11435` | One proxy alone, through HAProxy (real client address) |
| Proxy 1-3 own TDS | `127.0.0.1:11443-11445` | PROXY protocol from HAProxy (127.0.0.3) only |

Try: tsql -H localhost -p 1433 -U sa -P 'YourStr0ngP@ssword1' -D tenant_db
Logs: deployments/local/.run/*.log (make stack-logs); stop: make stack-down
EOF
}

cmd_up() {
	ensure_binaries
	# Every port first: name each one taken by a process that is not ours.
	local c p u bad=0
	for c in "${ALL[@]}"; do
		pid_of "$c" >/dev/null && continue
		[[ "$c" == prometheus ]] && ! prometheus_enabled && continue
		for p in $(ports "$c"); do
			u=$(port_user "$p")
			if [[ -n "$u" ]]; then
				echo "stack: port $p ($c) is in use by $u: stop it or run make stack-down" >&2
				bad=1
			fi
		done
	done
	((bad == 0)) || exit 1
	# A SO_REUSEPORT listener that closes hands its accept queue to another
	# listener of the same port instead of resetting it (kernel >= 5.14).
	if [[ "$(id -u)" == 0 ]]; then
		if sysctl -qw net.ipv4.tcp_migrate_req=1 2>/dev/null; then
			say "net.ipv4.tcp_migrate_req=1"
		else
			say "could not set net.ipv4.tcp_migrate_req=1 (not supported here); continuing"
		fi
	fi
	local t0=$SECONDS
	for c in "${BUCKETS[@]}" redis; do start "$c"; done
	for c in "${BUCKETS[@]}" redis; do wait_healthy "$c" 30 || { cmd_down >/dev/null 2>&1 || true; die "$c did not start"; }; done
	for c in "${PROXIES[@]}"; do start "$c"; done
	for c in "${PROXIES[@]}"; do wait_healthy "$c" 30 || { cmd_down >/dev/null 2>&1 || true; die "$c did not start"; }; done
	start haproxy
	wait_healthy haproxy 30 || { cmd_down >/dev/null 2>&1 || true; die "haproxy did not start"; }
	start prometheus
	if pid_of prometheus >/dev/null; then
		wait_healthy prometheus 60 || say "warning: prometheus not ready after 60s (see $rel_run/prometheus.log)"
	fi
	# Every proxy registered in Redis.
	local i members
	for ((i = 0; i < 100; i++)); do
		members=$(redis-cli -h 127.0.0.1 -p 6379 SMEMBERS proxy:instances 2>/dev/null | sort | tr '\n' ' ')
		[[ "$members" == "proxy-1 proxy-2 proxy-3 " ]] && break
		sleep 0.1
	done
	say "proxy:instances = ${members:-(none)}"
	say "up in $((SECONDS - t0))s"
	cmd_status
	print_ports
}

cmd_down() {
	local c keys left p u bad=0 jobs=()
	stop haproxy
	# The proxies drain in parallel (each waits drain_delay).
	for c in "${PROXIES[@]}"; do
		stop "$c" TERM &
		jobs+=($!)
	done
	wait "${jobs[@]}"
	stop prometheus
	for c in "${BUCKETS[@]}"; do stop "$c"; done
	if pid_of redis >/dev/null; then
		# The proxies left Redis when they stopped; delete whatever proxy:*
		# key remains (a proxy that was SIGKILLed), then stop our Redis.
		keys=$(redis_proxy_keys)
		if [[ -n "$keys" ]]; then
			xargs -r redis-cli -h 127.0.0.1 -p 6379 DEL <<<"$keys" >/dev/null
		fi
		left=$(redis_proxy_keys | wc -l)
		say "redis: $left proxy:* keys left"
		((left == 0)) || bad=1
		redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
		stop redis
	fi
	rm -rf "$run/data" "$run/prometheus"
	# Nothing of ours may still listen.
	for c in "${ALL[@]}"; do
		for p in $(ports "$c"); do
			u=$(port_user "$p")
			if [[ -n "$u" ]]; then
				echo "stack: port $p ($c) still in use by $u" >&2
				bad=1
			fi
		done
	done
	((bad == 0)) || die "down: something was left behind"
	say "down: no process left, ports free"
}

cmd_status() {
	local c pid state p
	printf '%-11s %-8s %-8s %-9s %s\n' COMPONENT STATE PID HEALTH PORTS
	for c in "${ALL[@]}"; do
		if pid=$(pid_of "$c"); then
			state=running
			if healthy "$c"; then p=healthy; else p=unhealthy; fi
		else
			pid=-
			state=stopped
			p=-
			if [[ "$c" == prometheus ]] && ! prometheus_enabled; then state=disabled; fi
		fi
		printf '%-11s %-8s %-8s %-9s %s\n' "$c" "$state" "$pid" "$p" "$(ports "$c" | tr ' ' ',')"
	done
	if pid_of redis >/dev/null; then
		echo "proxy:instances: $(redis-cli -h 127.0.0.1 -p 6379 SMEMBERS proxy:instances | sort | tr '\n' ' ')"
	fi
}

cmd_logs() {
	local files=()
	for c in "${PROXIES[@]}"; do files+=("$(logfile "$c")"); done
	exec tail -n 20 -F "${files[@]}"
}

need_component() {
	[[ $# -ge 1 ]] || die "usage: stack.sh ${FUNCNAME[1]#cmd_} COMPONENT"
	ports "$1" >/dev/null
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
logs) cmd_logs ;;
start)
	need_component "${2:-}"
	ensure_binaries
	start "$2"
	wait_healthy "$2" 30
	;;
stop) need_component "${2:-}" && stop "$2" TERM ;;
kill) need_component "${2:-}" && stop "$2" KILL ;;
restart)
	need_component "${2:-}"
	stop "$2" TERM
	start "$2"
	wait_healthy "$2" 30
	;;
wait) need_component "${2:-}" && wait_healthy "$2" "${3:-30}" ;;
pid) need_component "${2:-}" && pid_of "$2" ;;
*)
	sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 2
	;;
esac
