#!/usr/bin/python3
"""pytds test client of tools/clients (run with Debian's /usr/bin/python3).

Reads a JSON spec on stdin, runs its steps on one pytds connection and prints
one JSON result line on stdout. See tools/clients/README.md.

Encryption (pytds 1.8, Debian bookworm):
  none  -> no cafile: PRELOGIN ENCRYPTION=NOT_SUP, no TLS.
  login -> cafile + enc_login_only=True: ENCRYPTION=OFF, TLS for LOGIN7 only.
  full  -> cafile: ENCRYPTION=ON, TLS for the whole session.
pytds only enables TLS when given a cafile and always verifies the chain with
it. Without spec["cafile"] we keep pytds's own TLS code but hand it an
OpenSSL context that accepts any certificate (tests use self-signed ones).

Cancel: pytds's own query-timeout path. The socket timeout is set to after_ms;
when it fires while waiting for the response, pytds sends ATTENTION; then
cursor.cancel() reads up to the server's DONE_ATTN.
"""
import json
import re
import sys
import time


from dbapi_common import jvalue, now_ms, rnd  # beside this script, on sys.path[0]


def err_of(e):
    num = getattr(e, "number", None)
    if isinstance(num, int) and num:
        msg = getattr(e, "text", None) or str(e)
        return {"number": num, "message": msg,
                "class": int(getattr(e, "severity", 0) or 0),
                "state": int(getattr(e, "state", 0) or 0)}
    text = e.args[0] if e.args and isinstance(e.args[0], str) else (str(e) or type(e).__name__)
    return {"number": 0, "message": "%s: %s" % (type(e).__name__, text)}


PARAM_RE = re.compile(r"@p(\d+)\b", re.IGNORECASE)


def to_pyformat(sql):
    """@p1..@pN -> %(p1)s..: pytds then sends sp_executesql with @p1..@pN."""
    return PARAM_RE.sub(lambda m: "%%(p%s)s" % m.group(1), sql.replace("%", "%%"))


def read_sets(cur, r):
    while True:
        if cur.description is not None:
            cols = [d[0] for d in cur.description]
            rows = [[jvalue(v) for v in row] for row in cur.fetchall()]
            r["results"].append({"columns": cols, "rows": rows})
        if cur.rowcount is not None and cur.rowcount >= 0:
            r["rowcounts"].append(cur.rowcount)
        if not cur.nextset():
            break


def install_trust_all(pytds):
    """Make pytds's TLS accept any server certificate (no cafile in the spec)."""
    import OpenSSL.SSL
    from pytds import tls

    def create_context(cafile):
        ctx = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_CLIENT_METHOD)
        ctx.set_options(OpenSSL.SSL.OP_NO_SSLv2 | OpenSSL.SSL.OP_NO_SSLv3)
        ctx.set_verify(OpenSSL.SSL.VERIFY_NONE, lambda *a: True)
        return ctx

    tls.create_context = create_context
    pytds.tls.create_context = create_context


def main():
    spec = json.load(sys.stdin)
    res = {"client": "pytds", "connected": False, "connect_ms": 0,
           "login_error": None, "steps": []}
    import pytds

    enc = spec.get("encrypt") or "none"
    kw = dict(dsn=spec["host"], port=int(spec["port"]),
              user=spec.get("user"), password=spec.get("password"),
              database=spec.get("database") or None,
              login_timeout=spec.get("timeout_s") or 30,
              autocommit=True, disable_connect_retry=True)
    if spec.get("app"):
        kw["appname"] = spec["app"]
    if enc in ("login", "full"):
        cafile = spec.get("cafile")
        if cafile:
            kw["cafile"] = cafile
            kw["validate_host"] = True
        else:
            install_trust_all(pytds)
            kw["cafile"] = "/nonexistent-trust-all"  # only switches TLS on; see install_trust_all
            kw["validate_host"] = False
        kw["enc_login_only"] = enc == "login"

    t0 = now_ms()
    try:
        conn = pytds.connect(**kw)
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
                with conn.cursor() as cur:
                    cur.execute(st["sql"])
                    read_sets(cur, r)
                r["ok"] = True
            elif op == "param":
                params = {"p%d" % (i + 1): v for i, v in enumerate(st.get("params") or [])}
                with conn.cursor() as cur:
                    cur.execute(to_pyformat(st["sql"]), params)
                    read_sets(cur, r)
                r["ok"] = True
            elif op == "cancel":
                sock = conn._conn.sock
                cur = conn.cursor()
                try:
                    sock.settimeout(max(st.get("after_ms") or 0, 1) / 1000.0)
                    try:
                        cur.execute(st["sql"])
                        read_sets(cur, r)
                    except TimeoutError:
                        r["canceled"] = True
                    finally:
                        sock.settimeout(None)
                    if r["canceled"]:
                        cur.cancel()  # drain to the server's DONE_ATTN
                finally:
                    cur.close()
                r["ok"] = True
            elif op == "begin":
                conn.autocommit = False  # pytds sends a TM BEGIN request
                in_tran = True
                r["ok"] = True
            elif op == "commit":
                conn.commit()  # TM COMMIT (pytds chains a new transaction...)
                conn.autocommit = True  # ...which this rolls back
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
