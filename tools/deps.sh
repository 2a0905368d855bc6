#!/usr/bin/env bash
# tools/deps.sh: install the system packages and npm modules that the tests need.
#
# Idempotent and fast when everything is present (one dpkg-query call, prints
# "deps: all present"). As root it installs only what is missing; as another
# user it prints the exact command to run and exits 1.
#
# Services are NOT started by this script (a temporary policy-rc.d stops the
# Debian postinst scripts from launching redis/haproxy/prometheus): each test
# starts the daemons it needs on its own ports.
set -euo pipefail

# Debian packages, one per line, with the tests that need each.
PACKAGES=(
	freetds-bin     # tools/clients: FreeTDS `tsql`, a real TDS 7.4 client
	python3-tds     # tools/clients: pytds (for Debian's /usr/bin/python3)
	python3-openssl # tools/clients: pytds needs pyOpenSSL for its TLS modes (not a dependency of python3-tds)
	libjtds-java    # tools/clients: jTDS 1.3.1 JDBC driver (TDS 7.1, no PRELOGIN with ssl=off)
	redis-server    # limiter/registry tests: the shared slot counter (Lua scripts, client-side caching)
	redis-sentinel  # limiter failover tests: Redis Sentinel
	haproxy         # bench/: the "HAProxy in TCP mode" performance anchor; deployments/ examples
	tshark          # pkg/tds tests: independent TDS decoder for codec output (text2pcap + tshark)
	jq              # .ci/run and scripts: reading JSON results from the clients and /metrics tooling
	curl            # admin endpoint tests and scripts: /health, /metrics
	prometheus      # metrics tests: `promtool check metrics` / rule checks on our /metrics output
	unixodbc        # tools/clients: the ODBC driver manager pyodbc loads (odbcinst registers drivers)
	tdsodbc         # tools/clients: FreeTDS ODBC driver (libtdsodbc.so), TDS 7.4
	python3-pyodbc  # tools/clients: pyodbc for Debian's /usr/bin/python3, over unixODBC + FreeTDS ODBC
	docker-compose  # deployments: `docker-compose config` validates docker-compose.yml (compose v1, no engine needed)
	libcap2-bin     # deployments: `setcap`, the image's file capabilities in TestEBPFCapsAsNonroot (setpriv is util-linux's)
)
# Added only when the command is missing (the machine image may ship them from elsewhere):
#   default-jdk-headless  tools/clients: `java` + `javac` to compile and run the jTDS client
#   nodejs, npm           tools/clients: tedious (Debian's nodejs 18.19+ satisfies tedious 19's >=18.17)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_dir="$here/clients/node"

missing=()

# One dpkg-query for all packages: "name status" lines; absent packages print nothing.
declare -A installed=()
while read -r name status; do
	[[ "$status" == "ii" ]] && installed["$name"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
for p in "${PACKAGES[@]}"; do
	[[ -n "${installed[$p]:-}" ]] || missing+=("$p")
done

if ! command -v java >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
	missing+=(default-jdk-headless)
fi
if ! command -v node >/dev/null 2>&1; then
	missing+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
	missing+=(npm)
fi

changed=0
if ((${#missing[@]} > 0)); then
	if [[ "$(id -u)" != 0 ]]; then
		echo "deps: missing packages: ${missing[*]}" >&2
		echo "deps: run as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "deps: installing: ${missing[*]}"
	# Keep Debian's postinst scripts from starting daemons (tests start their own).
	policy=/usr/sbin/policy-rc.d
	added_policy=0
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		added_policy=1
	fi
	cleanup_policy() { if ((added_policy)); then rm -f "$policy"; fi; }
	trap cleanup_policy EXIT
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	cleanup_policy
	added_policy=0
	changed=1
fi

# tedious for tools/clients/node (package-lock.json is committed; node_modules is not).
if [[ ! -d "$node_dir/node_modules/tedious" ]]; then
	echo "deps: installing npm modules in tools/clients/node"
	if [[ -f "$node_dir/package-lock.json" ]]; then
		(cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	else
		(cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
	fi
	changed=1
fi

# FreeTDS ODBC under the name the clients use (DRIVER={FreeTDS}). Debian's
# tdsodbc registers it from its postinst; a machine where that did not run
# (or that removed it) gets it from the template the package ships.
if ! odbcinst -q -d -n FreeTDS >/dev/null 2>&1; then
	if [[ "$(id -u)" != 0 ]]; then
		echo "deps: FreeTDS ODBC driver not registered; run as root: odbcinst -i -d -f /usr/share/tdsodbc/odbcinst.ini" >&2
		exit 1
	fi
	echo "deps: registering the FreeTDS ODBC driver with unixODBC"
	odbcinst -i -d -f /usr/share/tdsodbc/odbcinst.ini >/dev/null
	changed=1
fi

# go-sqlcmd, the real `sqlcmd` the runbook uses: built from the Go module
# proxy at an exact version in a throwaway module, cached per version under
# ~/.cache/tdsgate, copied to bin/sqlcmd (where tests and the scenario
# runner look). About 90 s the first time, nothing after.
SQLCMD_VERSION=v1.10.0
root="$(cd "$here/.." && pwd)"
go_bin=$(command -v go || true)
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
cache="${XDG_CACHE_HOME:-$HOME/.cache}/tdsgate/go-sqlcmd-$SQLCMD_VERSION"
if [[ ! -x "$cache/sqlcmd" ]]; then
	[[ -x "$go_bin" ]] || { echo "deps: go is not installed; it builds go-sqlcmd" >&2; exit 1; }
	echo "deps: building go-sqlcmd $SQLCMD_VERSION (cached in $cache)"
	tmp=$(mktemp -d)
	(
		cd "$tmp"
		export GOFLAGS=-mod=mod GOWORK=off
		"$go_bin" mod init sqlcmdbuild >/dev/null 2>&1
		"$go_bin" get "github.com/microsoft/go-sqlcmd/cmd/modern@$SQLCMD_VERSION" >/dev/null 2>&1
		mkdir -p "$cache"
		"$go_bin" build -trimpath -ldflags "-X main.version=$SQLCMD_VERSION" -o "$cache/sqlcmd.tmp" github.com/microsoft/go-sqlcmd/cmd/modern
		mv "$cache/sqlcmd.tmp" "$cache/sqlcmd"
	) || { rm -rf "$tmp"; echo "deps: building go-sqlcmd $SQLCMD_VERSION failed" >&2; exit 1; }
	rm -rf "$tmp"
	changed=1
fi
if ! cmp -s "$cache/sqlcmd" "$root/bin/sqlcmd"; then
	mkdir -p "$root/bin"
	cp "$cache/sqlcmd" "$root/bin/sqlcmd.tmp" && mv "$root/bin/sqlcmd.tmp" "$root/bin/sqlcmd"
	changed=1
fi

if ((changed)); then
	echo "deps: done"
else
	echo "deps: all present"
fi
