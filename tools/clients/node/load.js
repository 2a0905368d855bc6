'use strict';
// Multiplexing load with tedious: many Connections in one node process.
//
// Reads a JSON load spec on stdin (see tools/clients/load.go, LoadSpec),
// opens `sessions` tedious Connections, and from start_at_ms to end_at_ms has
// each run, every min_ms..max_ms at random, either SELECT 1 (execSqlBatch) or
// a driver-API transaction (beginTransaction, one INSERT, commitTransaction).
// Connections stay open until end_at_ms. Prints one JSON LoadResult line on
// stdout.

const { Connection, Request } = require('tedious');

const { readStdin } = require('./stdin');

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

// mulberry32: a seeded generator, so runs are repeatable per session.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main() {
  const spec = JSON.parse(await readStdin());
  const res = { client: 'tedious', sessions: 0, login_errors: 0, queries: 0, inserts: 0, failed: 0,
    errors: {}, first_error: '', lat_ms: [] };
  const fail = (code, msg) => {
    res.failed++;
    res.errors[code] = (res.errors[code] || 0) + 1;
    if (!res.first_error) res.first_error = String(msg).slice(0, 500);
  };
  const codeOf = (err) => (err && err.number ? String(err.number) : (err && err.code) || 'Error');
  const lo = spec.min_ms || 100;
  const hi = spec.max_ms || 1000;
  const ratio = spec.insert_ratio === undefined ? 0.5 : spec.insert_ratio;

  async function session(idx) {
    const conn = new Connection({
      server: spec.host,
      authentication: { type: 'default', options: { userName: spec.user, password: spec.password } },
      options: {
        port: spec.port, database: spec.database, encrypt: false, trustServerCertificate: true,
        connectTimeout: (spec.timeout_s || 60) * 1000, requestTimeout: 0, maxRetriesOnTransientErrors: 0,
        appName: 'load-tedious',
      },
    });
    conn.on('error', () => {});
    let loginToken = null; // the server's ERROR token, whose number a login failure does not carry
    const onErrToken = (t) => { loginToken = t; };
    conn.on('errorMessage', onErrToken);
    const loginErr = await new Promise((resolve) => {
      conn.once('connect', (err) => resolve(err || null));
      conn.connect();
    });
    conn.removeListener('errorMessage', onErrToken);
    if (loginErr) {
      res.login_errors++;
      fail(loginToken && loginToken.number ? String(loginToken.number) : codeOf(loginErr), 'login: ' + loginErr.message);
      return;
    }
    res.sessions++;
    const run = (sql, check) => new Promise((resolve, reject) => {
      let got = null;
      const req = new Request(sql, (err) => (err ? reject(err) : (check && got !== 1 ? reject(new Error('SELECT 1 returned ' + got)) : resolve())));
      req.on('row', (cols) => { got = cols[0].value; });
      conn.execSqlBatch(req);
    });
    const tx = (fn) => new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
    const r = rng((spec.seed || 1) * 100003 + idx);
    await sleep(spec.start_at_ms - Date.now());
    for (;;) {
      const nap = lo + Math.floor(r() * (hi - lo + 1));
      if (Date.now() + nap >= spec.end_at_ms) break;
      await sleep(nap);
      const t0 = process.hrtime.bigint();
      try {
        if (r() < ratio) {
          await tx((cb) => conn.beginTransaction(cb));
          await run(`INSERT INTO test_table (name, value) VALUES ('${spec.tag}', ${idx})`, false);
          await tx((cb) => conn.commitTransaction(cb));
          res.inserts++;
        } else {
          await run('SELECT 1', true);
          res.queries++;
        }
        res.lat_ms.push(Math.round(Number(process.hrtime.bigint() - t0) / 1e4) / 100);
      } catch (err) {
        fail(codeOf(err), err.message);
        try { await tx((cb) => conn.rollbackTransaction(cb)); } catch (_) { /* not in a transaction */ }
      }
    }
    await sleep(spec.end_at_ms - Date.now());
    conn.close();
  }

  const all = [];
  for (let i = 0; i < spec.sessions; i++) all.push(session(i));
  await Promise.all(all);
  // Exit only once the result is written: a pipe takes a large write
  // asynchronously, and exiting at once truncates it.
  process.stdout.write(JSON.stringify(res) + '\n', () => process.exit(0));
}

main().catch((e) => {
  process.stderr.write('load.js: ' + (e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
