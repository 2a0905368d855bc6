#!/usr/bin/python3
"""pyodbc test client of tools/clients (run with Debian's /usr/bin/python3).

pyodbc 4.0 (Debian python3-pyodbc) over unixODBC and the FreeTDS ODBC driver
(Debian tdsodbc, registered as "FreeTDS"; TDS_Version=7.4). Reads a JSON spec
on stdin, runs its steps on one connection and prints one JSON result line on
stdout. See tools/clients/README.md.

Encryption (FreeTDS's Encryption= connection attribute):
  none  -> Encryption=off:     PRELOGIN ENCRYPTION=NOT_SUP, no TLS.
  login -> Encryption=request: ENCRYPTION=OFF, TLS for LOGIN7 only.
  full  -> Encryption=require: ENCRYPTION=ON, TLS for the whole session.
Without spec["cafile"] FreeTDS checks no certificate; with it, a private
freetds.conf (FREETDSCONF) names it as "ca file" and FreeTDS verifies the
chain and the host name.

param: @p1..@pN become ODBC '?' markers in order of appearance; FreeTDS then
sends sp_prepexec (statement and declaration as NTEXT) and sp_unprepare. A
parameter may be a JSON scalar or {"type": T, "value": V} with T one of int,
bigint, decimal, float, nvarchar, varbinary (V: hex, "0x..."), datetime2
(V: "YYYY-MM-DD HH:MM:SS[.ffffff]"), null.

Cancel: cursor.cancel() (SQLCancel) from a timer thread after after_ms;
FreeTDS sends ATTENTION and the execute fails with SQLSTATE HY008.
"""
import datetime
import decimal
import json
import os
import re
import sys
import tempfile
import threading
import time


from dbapi_common import jvalue, now_ms, rnd  # beside this script, on sys.path[0]


# "[42S02] [FreeTDS][SQL Server]Invalid object name 'nope'. (208) (SQLExecDirectW)"
MSG_RE = re.compile(r"^\[[0-9A-Z]{5}\] (?:\[[^\]]*\])*(.*?)(?: \((\d+)\))?(?: \(SQL\w+\))?$", re.S)


def err_of(e):
    state = e.args[0] if len(e.args) > 1 and isinstance(e.args[0], str) else ""
    text = e.args[-1] if e.args and isinstance(e.args[-1], str) else (str(e) or type(e).__name__)
    m = MSG_RE.match(text.strip())
    # FreeTDS tags its own library errors "[SQL Server]" too, numbered
    # 20000-20999 (20009: unable to connect): those are not server errors.
    if m and m.group(2) and "[SQL Server]" in text and not 20000 <= int(m.group(2)) <= 20999:
        return {"number": int(m.group(2)), "message": m.group(1).strip(), "state": 0, "class": 0,
                "sqlstate": state}
    return {"number": 0, "message": "%s: %s" % (type(e).__name__, text), "sqlstate": state}


PARAM_RE = re.compile(r"@p(\d+)\b", re.IGNORECASE)


def to_qmark(sql, values):
    """@p1..@pN -> '?' markers, with the values in the order they appear."""
    out = []

    def sub(m):
        out.append(values[int(m.group(1)) - 1])
        return "?"
    return PARAM_RE.sub(sub, sql), out


def typed(p):
    if not isinstance(p, dict):
        return p
    t, v = p.get("type"), p.get("value")
    if v is None or t == "null":
        return None
    if t in ("int", "bigint"):
        return int(v)
    if t == "decimal":
        return decimal.Decimal(str(v))
    if t == "float":
        return float(v)
    if t == "nvarchar":
        return str(v)
    if t == "varbinary":
        s = str(v)
        return bytes.fromhex(s[2:] if s.lower().startswith("0x") else s)
    if t == "datetime2":
        return datetime.datetime.fromisoformat(str(v))
    raise ValueError("unknown parameter type %r" % t)


def read_sets(cur, r):
    while True:
        if cur.description is not None:
            cols = [d[0] for d in cur.description]
            rows = [[jvalue(v) for v in row] for row in cur.fetchall()]
            r["results"].append({"columns": cols, "rows": rows})
        elif cur.rowcount is not None and cur.rowcount >= 0:
            r["rowcounts"].append(cur.rowcount)
        if not cur.nextset():
            break


def conn_string(spec):
    enc = {"none": "off", "login": "request", "full": "require"}[spec.get("encrypt") or "none"]
    parts = [
        "DRIVER={FreeTDS}",
        "SERVER=%s" % spec["host"],
        "PORT=%d" % int(spec["port"]),
        "UID=%s" % spec.get("user", ""),
        "PWD={%s}" % (spec.get("password") or "").replace("}", "}}"),
        "TDS_Version=7.4",
        "Encryption=%s" % enc,
        "ClientCharset=UTF-8",
    ]
    if spec.get("database"):
        parts.append("DATABASE=%s" % spec["database"])
    if spec.get("app"):
        parts.append("APP=%s" % spec["app"])
    return ";".join(parts)


def main():
    spec = json.load(sys.stdin)
    res = {"client": "pyodbc", "connected": False, "connect_ms": 0,
           "login_error": None, "steps": []}
    if spec.get("cafile"):
        conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
        conf.write("[global]\n\tca file = %s\n\tcheck certificate hostname = yes\n" % spec["cafile"])
        conf.close()
        os.environ["FREETDSCONF"] = conf.name
    import pyodbc
    pyodbc.pooling = False

    t0 = now_ms()
    try:
        conn = pyodbc.connect(conn_string(spec), autocommit=True, timeout=int(spec.get("timeout_s") or 30))
    except Exception as e:  # login/connection failures are data
        res["connect_ms"] = rnd(now_ms() - t0)
        res["login_error"] = err_of(e)
        print(json.dumps(res))
        return
    res["connect_ms"] = rnd(now_ms() - t0)
    res["connected"] = True

    in_tran = False
    for st in spec.get("steps") or []:
        op = st.get("op")
        r = {"op": op, "ok": False, "ms": 0, "results": [], "rowcounts": [],
             "error": None, "canceled": False}
        s0 = now_ms()
        try:
            if op in ("query", "hold"):
                cur = conn.cursor()
                try:
                    cur.execute(st["sql"])
                    read_sets(cur, r)
                finally:
                    cur.close()
                r["ok"] = True
            elif op == "param":
                sql, args = to_qmark(st["sql"], [typed(p) for p in st.get("params") or []])
                cur = conn.cursor()
                try:
                    cur.execute(sql, *args)
                    read_sets(cur, r)
                finally:
                    cur.close()
                r["ok"] = True
            elif op == "cancel":
                cur = conn.cursor()
                timer = threading.Timer(max(st.get("after_ms") or 0, 1) / 1000.0, cur.cancel)
                timer.start()
                try:
                    cur.execute(st["sql"])
                    read_sets(cur, r)
                except pyodbc.Error as e:
                    if e.args and e.args[0] == "HY008":
                        r["canceled"] = True
                    else:
                        raise
                finally:
                    # The timer's thread may still be inside SQLCancel
                    # when the execute returns: wait for it before the
                    # statement is freed (closing it under SQLCancel
                    # crashed the process at exit, under load).
                    timer.cancel()
                    timer.join()
                    cur.close()
                r["ok"] = True
            elif op == "begin":
                conn.autocommit = False  # FreeTDS: SET IMPLICIT_TRANSACTIONS ON
                in_tran = True
                r["ok"] = True
            elif op == "commit":
                conn.commit()
                conn.autocommit = True
                in_tran = False
                r["ok"] = True
            elif op == "rollback":
                conn.rollback()
                conn.autocommit = True
                in_tran = False
                r["ok"] = True
            elif op == "sleep":
                time.sleep((st.get("ms") or 0) / 1000.0)
                r["ok"] = True
            else:
                r["unsupported"] = True
                r["error"] = {"number": 0, "message": "unknown op %s" % op}
        except Exception as e:
            r["error"] = err_of(e)
        r["ms"] = rnd(now_ms() - s0)
        res["steps"].append(r)

    try:
        if in_tran:
            conn.rollback()
        conn.close()
    except Exception:
        pass
    print(json.dumps(res))


if __name__ == "__main__":
    main()
