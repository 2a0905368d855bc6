#!/usr/bin/env bash
# init-db: creates tenant_db and test_table (with seed rows) on the three
# SQL Servers, then exits 0. docker compose starts it once the three are
# healthy; the proxies start after it completed successfully.
set -euo pipefail
sqlcmd=/opt/mssql-tools18/bin/sqlcmd
for n in 1 2 3; do
	host="sqlserver-bucket-$n"
	pass="YourStr0ngP@ssword$n"
	for try in $(seq 1 30); do
		if "$sqlcmd" -S "$host,1433" -U sa -P "$pass" -C -b -Q "SELECT 1" >/dev/null 2>&1; then
			break
		fi
		echo "init-db: waiting for $host ($try)"
		sleep 2
	done
	echo "init-db: $host"
	"$sqlcmd" -S "$host,1433" -U sa -P "$pass" -C -b -i /init-db/init.sql
done
echo "init-db: done"
