#!/usr/bin/python3
"""Multiplexing load with pytds: many sessions in one process.

Reads a JSON load spec on stdin (see tools/clients/load.go, LoadSpec), opens
`sessions` pytds connections (one thread each, autocommit on), and from
start_at_ms to end_at_ms has each run, every min_ms..max_ms at random, either
SELECT 1 or a driver-API transaction (autocommit off, one INSERT, commit,
autocommit on). Connections stay open until end_at_ms. Prints one JSON
LoadResult line on stdout.
"""

import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from load_common import Stats, session_loop  # noqa: E402


def main():
    spec = json.load(sys.stdin)
    import pytds

    stats = Stats("pytds")

    def connect():
        return pytds.connect(dsn=spec["host"], port=int(spec["port"]), user=spec["user"],
                             password=spec["password"], database=spec.get("database") or None,
                             login_timeout=spec.get("timeout_s") or 60, autocommit=True,
                             disable_connect_retry=True, appname=spec.get("app") or "load-pytds")

    def query(conn):
        cur = conn.cursor()
        try:
            cur.execute("SELECT 1")
            row = cur.fetchone()
            if row is None or row[0] != 1:
                raise RuntimeError("SELECT 1 returned %r" % (row,))
        finally:
            cur.close()

    def insert(conn, value):
        conn.autocommit = False  # TM BEGIN
        cur = conn.cursor()
        try:
            cur.execute("INSERT INTO test_table (name, value) VALUES (%s, %s)", (spec["tag"], value))
        finally:
            cur.close()
        conn.commit()
        conn.autocommit = True

    def err_number(e):
        n = getattr(e, "number", None) or getattr(e, "msg_no", None)
        return str(n) if n else type(e).__name__

    threads = []
    for i in range(int(spec["sessions"])):
        t = threading.Thread(target=session_loop, args=(spec, stats, i, connect, query, insert, err_number,
                                                        lambda c: c.close()), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    print(json.dumps(stats.result()))


if __name__ == "__main__":
    main()
