// Multiplexing load with jTDS: many sessions in one JVM.
//
// Reads a JSON load spec on stdin (see tools/clients/load.go, LoadSpec), opens
// `sessions` jTDS connections (one thread each, autocommit on), and from
// start_at_ms to end_at_ms has each run, every min_ms..max_ms at random, either
// SELECT 1 (Statement) or a driver-API transaction (setAutoCommit(false), one
// INSERT through a Statement, commit(), setAutoCommit(true)). Connections stay open until
// end_at_ms. Prints one JSON LoadResult line on stdout. Compiled together with
// JtdsClient.java, whose JSON reader and writer it uses.

import java.io.PrintStream;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

public class LoadJtds {
    static final Object lock = new Object();
    static long sessions, loginErrors, queries, inserts, failed;
    static final Map<String, Object> errors = new LinkedHashMap<>();
    static String firstError = "";
    static final List<Object> lat = new ArrayList<>();

    static void fail(String code, String msg) {
        synchronized (lock) {
            failed++;
            errors.put(code, ((Long) errors.getOrDefault(code, 0L)) + 1);
            if (firstError.isEmpty()) firstError = msg.length() > 500 ? msg.substring(0, 500) : msg;
        }
    }

    static String code(Exception e) {
        if (e instanceof SQLException && ((SQLException) e).getErrorCode() != 0) {
            return Integer.toString(((SQLException) e).getErrorCode());
        }
        return e.getClass().getSimpleName();
    }

    public static void main(String[] args) throws Exception {
        Map<String, Object> spec = JtdsClient.readSpec();
        PrintStream out = JtdsClient.resultOut();
        Class.forName("net.sourceforge.jtds.jdbc.Driver");

        String url = "jdbc:jtds:sqlserver://" + JtdsClient.str(spec, "host") + ":" + JtdsClient.num(spec, "port", 1433)
                + "/" + JtdsClient.str(spec, "database");
        java.util.Properties props = new java.util.Properties();
        props.setProperty("user", JtdsClient.str(spec, "user"));
        props.setProperty("password", JtdsClient.str(spec, "password"));
        props.setProperty("loginTimeout", Long.toString(JtdsClient.num(spec, "timeout_s", 60)));
        props.setProperty("appName", "load-jtds");
        props.setProperty("ssl", "off");
        final String tag = JtdsClient.str(spec, "tag");
        final long start = JtdsClient.num(spec, "start_at_ms", 0), end = JtdsClient.num(spec, "end_at_ms", 0);
        final int lo = (int) JtdsClient.num(spec, "min_ms", 100), hi = (int) JtdsClient.num(spec, "max_ms", 1000);
        final long seed = JtdsClient.num(spec, "seed", 1);
        Object r = spec.get("insert_ratio");
        final double ratio = r instanceof Number ? ((Number) r).doubleValue() : 0.5;
        int n = (int) JtdsClient.num(spec, "sessions", 1);

        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            final int idx = i;
            Thread t = new Thread(() -> {
                Random rnd = new Random(seed * 100003 + idx);
                Connection conn;
                try {
                    conn = DriverManager.getConnection(url, props);
                } catch (Exception e) {
                    synchronized (lock) { loginErrors++; }
                    fail(code(e), "login: " + e);
                    return;
                }
                synchronized (lock) { sessions++; }
                try {
                    sleepUntil(start);
                    while (true) {
                        int nap = lo + rnd.nextInt(hi - lo + 1);
                        if (System.currentTimeMillis() + nap >= end) break;
                        Thread.sleep(nap);
                        long t0 = System.nanoTime();
                        try {
                            if (rnd.nextDouble() < ratio) {
                                conn.setAutoCommit(false);
                                // A plain Statement: a jTDS PreparedStatement uses
                                // sp_prepare by default (prepareSQL=3), which pins.
                                try (Statement s = conn.createStatement()) {
                                    s.executeUpdate("INSERT INTO test_table (name, value) VALUES ('" + tag + "', " + idx + ")");
                                }
                                conn.commit();
                                conn.setAutoCommit(true);
                                synchronized (lock) { inserts++; }
                            } else {
                                try (Statement s = conn.createStatement(); ResultSet rs = s.executeQuery("SELECT 1")) {
                                    if (!rs.next() || rs.getInt(1) != 1) throw new SQLException("SELECT 1 returned no 1");
                                }
                                synchronized (lock) { queries++; }
                            }
                            double ms = (System.nanoTime() - t0) / 1e6;
                            synchronized (lock) { lat.add(Math.round(ms * 100) / 100.0); }
                        } catch (Exception e) {
                            fail(code(e), e.toString());
                            try { conn.rollback(); conn.setAutoCommit(true); } catch (Exception ignored) { }
                        }
                    }
                    sleepUntil(end);
                } catch (InterruptedException ignored) {
                } finally {
                    try { conn.close(); } catch (Exception ignored) { }
                }
            });
            t.setDaemon(true);
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join();
        Map<String, Object> res = new LinkedHashMap<>();
        res.put("client", "jtds");
        res.put("sessions", sessions);
        res.put("login_errors", loginErrors);
        res.put("queries", queries);
        res.put("inserts", inserts);
        res.put("failed", failed);
        res.put("errors", errors);
        res.put("first_error", firstError);
        res.put("lat_ms", lat);
        out.println(JtdsClient.Json.write(res));
        out.flush();
        System.exit(0);
    }

    static void sleepUntil(long unixMs) throws InterruptedException {
        long d = unixMs - System.currentTimeMillis();
        if (d > 0) Thread.sleep(d);
    }
}
