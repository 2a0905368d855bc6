"""The session loop and counters shared by the Python load programs
(load/load_pytds.py; see tools/clients/load.go for the spec and result)."""

import random
import threading
import time


def now_unix_ms():
    return time.time() * 1000.0


class Stats:
    def __init__(self, client):
        self.lock = threading.Lock()
        self.r = {"client": client, "sessions": 0, "login_errors": 0, "queries": 0, "inserts": 0,
                  "failed": 0, "errors": {}, "first_error": "", "lat_ms": []}

    def add(self, key, n=1):
        with self.lock:
            self.r[key] += n

    def fail(self, code, msg):
        with self.lock:
            self.r["failed"] += 1
            self.r["errors"][code] = self.r["errors"].get(code, 0) + 1
            if not self.r["first_error"]:
                self.r["first_error"] = msg[:500]

    def lat(self, ms):
        with self.lock:
            self.r["lat_ms"].append(round(ms, 2))

    def result(self):
        return self.r


def session_loop(spec, stats, idx, connect, query, insert, err_number, close):
    rnd = random.Random(int(spec.get("seed") or 1) * 100003 + idx)
    try:
        conn = connect()
    except Exception as e:  # counted, not raised: the run goes on
        stats.add("login_errors")
        stats.fail(err_number(e), "login: %s" % e)
        return
    stats.add("sessions")
    start, end = float(spec["start_at_ms"]), float(spec["end_at_ms"])
    lo, hi = int(spec.get("min_ms") or 100), int(spec.get("max_ms") or 1000)
    ratio = float(spec.get("insert_ratio", 0.5))
    wait = start - now_unix_ms()
    if wait > 0:
        time.sleep(wait / 1000.0)
    try:
        while True:
            nap = rnd.randint(lo, hi)
            if now_unix_ms() + nap >= end:
                break
            time.sleep(nap / 1000.0)
            t0 = time.monotonic()
            try:
                if rnd.random() < ratio:
                    insert(conn, idx)
                    stats.add("inserts")
                else:
                    query(conn)
                    stats.add("queries")
                stats.lat((time.monotonic() - t0) * 1000.0)
            except Exception as e:
                stats.fail(err_number(e), str(e))
                try:
                    conn.rollback()
                    conn.autocommit = True
                except Exception:
                    pass
        rest = end - now_unix_ms()
        if rest > 0:
            time.sleep(rest / 1000.0)
    finally:
        try:
            close(conn)
        except Exception:
            pass
