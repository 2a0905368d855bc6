'use strict';
// tedious test client of tools/clients: reads a JSON spec on stdin, runs its
// steps on one tedious Connection and prints one JSON result line on stdout.
// See tools/clients/README.md.
//
// Encryption: none -> encrypt:false (PRELOGIN ENCRYPTION=NOT_SUP);
// full -> encrypt:true (ON); strict -> encrypt:'strict' (TDS 8.0, TLS first).
// tedious has no login-only TLS mode. Certificates are trusted unless the
// spec names a "cafile".

const fs = require('fs');
const { Connection, Request, TYPES } = require('tedious');

const { readStdin } = require('./stdin');

const now = () => Number(process.hrtime.bigint()) / 1e6;
const rnd = (x) => Math.round(x * 100) / 100;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function jvalue(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === 'number') return Number.isFinite(v) ? v : String(v);
  if (typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Buffer.isBuffer(v)) return '0x' + v.toString('hex').toUpperCase();
  if (v instanceof Date) return v.toISOString();
  return String(v);
}

function errOf(e, token) {
  // token: the last ERROR token tedious emitted ('errorMessage' event).
  if (e && typeof e.number === 'number' && e.number) {
    return { number: e.number, message: e.message, class: e.class || 0, state: e.state || 0 };
  }
  if (token && token.number) {
    return { number: token.number, message: token.message, class: token.class || 0, state: token.state || 0 };
  }
  const msg = e ? (e.code ? e.code + ': ' : '') + (e.message || String(e)) : 'unknown error';
  return { number: 0, message: msg };
}

function paramType(v) {
  if (v === null || v === undefined) return TYPES.NVarChar;
  if (typeof v === 'boolean') return TYPES.Bit;
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return v >= -2147483648 && v <= 2147483647 ? TYPES.Int : TYPES.BigInt;
    return TYPES.Float;
  }
  return TYPES.NVarChar;
}

async function main() {
  const spec = JSON.parse(await readStdin());
  const res = { client: 'tedious', connected: false, connect_ms: 0, login_error: null, steps: [] };
  const enc = spec.encrypt || 'none';
  const timeoutMs = (spec.timeout_s > 0 ? spec.timeout_s : 30) * 1000;
  const options = {
    port: spec.port,
    encrypt: enc === 'strict' ? 'strict' : enc === 'full',
    trustServerCertificate: !spec.cafile,
    connectTimeout: timeoutMs,
    requestTimeout: 0, // steps may WAITFOR; the harness has its own hard timeout
    cancelTimeout: timeoutMs,
    maxRetriesOnTransientErrors: 0,
    rowCollectionOnRequestCompletion: false,
    useColumnNames: false,
  };
  const debug = !!process.env.TDSGATE_TEDIOUS_DEBUG;
  if (debug) options.debug = { packet: true, token: true, log: true, data: false };
  if (spec.database) options.database = spec.database;
  if (spec.app) options.appName = spec.app;
  if (spec.cafile) options.cryptoCredentialsDetails = { ca: fs.readFileSync(spec.cafile) };

  const conn = new Connection({
    server: spec.host,
    authentication: { type: 'default', options: { userName: spec.user, password: spec.password } },
    options,
  });
  if (debug) conn.on('debug', (m) => process.stderr.write('tedious: ' + m + '\n'));
  let lastErrToken = null;
  conn.on('errorMessage', (t) => { lastErrToken = t; });
  conn.on('error', () => {}); // socket errors after connect surface through requests

  const t0 = now();
  stage = 'login';
  const loginErr = await new Promise((resolve) => {
    conn.once('connect', (err) => resolve(err || null));
    conn.connect();
  });
  res.connect_ms = rnd(now() - t0);
  if (loginErr) {
    res.login_error = errOf(loginErr, lastErrToken);
    if (res.login_error.number === 0 && loginErr.code === 'ELOGIN' && lastErrToken) {
      res.login_error = errOf(null, lastErrToken);
    }
    try { conn.close(); } catch (_) { /* ignore */ }
    return res;
  }
  res.connected = true;

  // exec runs one request; resolves with its error (or null). Result sets,
  // row counts and the cancel flag are recorded into r.
  function exec(sql, params, r, batch, cancelAfter) {
    return new Promise((resolve) => {
      let current = null;
      lastErrToken = null;
      let timer = null;
      const req = new Request(sql, (err) => {
        if (timer) clearTimeout(timer);
        resolve(err || null);
      });
      req.on('columnMetadata', (cols) => {
        current = { columns: cols.map((c) => c.colName), rows: [] };
        r.results.push(current);
      });
      req.on('row', (cols) => {
        if (current) current.rows.push(cols.map((c) => jvalue(c.value)));
      });
      const onDone = (rowCount) => {
        if (typeof rowCount === 'number') r.rowcounts.push(rowCount);
      };
      req.on('doneInProc', onDone);
      req.on('done', onDone);
      (params || []).forEach((v, i) => req.addParameter('p' + (i + 1), paramType(v), v));
      if (batch) conn.execSqlBatch(req); else conn.execSql(req);
      if (cancelAfter !== undefined) {
        timer = setTimeout(() => { r._fired = true; conn.cancel(); }, Math.max(cancelAfter, 1));
      }
    });
  }

  function tran(fn) {
    return new Promise((resolve) => fn((err) => resolve(err || null)));
  }

  for (const st of spec.steps || []) {
    const r = { op: st.op, ok: false, ms: 0, results: [], rowcounts: [], error: null, canceled: false };
    const s0 = now();
    stage = 'step ' + res.steps.length + ' (' + st.op + ')';
    let err = null;
    try {
      switch (st.op) {
        case 'query':
        case 'hold':
          err = await exec(st.sql, null, r, true);
          break;
        case 'param':
          err = await exec(st.sql, st.params || [], r, false);
          break;
        case 'cancel':
          err = await exec(st.sql, null, r, true, st.after_ms || 0);
          if (err && err.code === 'ECANCEL') {
            r.canceled = true;
            err = null;
          }
          break;
        case 'begin':
          err = await tran((cb) => conn.beginTransaction(cb));
          break;
        case 'commit':
          err = await tran((cb) => conn.commitTransaction(cb));
          break;
        case 'rollback':
          err = await tran((cb) => conn.rollbackTransaction(cb));
          break;
        case 'sleep':
          await sleep(st.ms || 0);
          break;
        default:
          r.unsupported = true;
          err = { message: 'unknown op ' + st.op };
      }
    } catch (e) {
      err = e;
    }
    delete r._fired;
    if (err) r.error = errOf(err, lastErrToken);
    r.ok = !err;
    r.ms = rnd(now() - s0);
    res.steps.push(r);
  }
  stage = 'close';
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, 2000);
    conn.once('end', () => { clearTimeout(timer); resolve(); });
    try { conn.close(); } catch (_) { resolve(); }
  });
  return res;
}

// If tedious drops a callback, Node would exit 0 with no output: say where.
let stage = 'start';
process.on('beforeExit', () => {
  process.stderr.write('tedious client: event loop drained before the result (stage ' + stage + ')\n');
  process.exit(3);
});

main().then(
  (res) => process.stdout.write(JSON.stringify(res) + '\n', () => process.exit(0)),
  (e) => {
    process.stderr.write('tedious client: ' + (e && e.stack ? e.stack : String(e)) + '\n');
    process.exit(2);
  },
);
