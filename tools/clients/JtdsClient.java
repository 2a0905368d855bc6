// JtdsClient is the jTDS 1.3.1 test client of tools/clients: it reads a JSON
// spec on stdin, runs its steps on one JDBC connection and prints one JSON
// result line on stdout. See tools/clients/README.md.
//
// Encryption (jTDS "ssl" property):
//   none  -> ssl=off:     no PRELOGIN at all, LOGIN7 is the first packet.
//   login -> ssl=request: PRELOGIN ENCRYPTION=OFF, TLS for LOGIN7 only when
//                         the server answers OFF. Not offered by the Go API
//                         (clients.Supports): unreliable on Java 17.
//   full  -> ssl=require: PRELOGIN ENCRYPTION=ON, trusts any certificate;
//            with "cafile": ssl=authenticate against that PEM.
// jTDS speaks TDS 7.1 (its "tds=8.0").
//
// No dependencies besides the jTDS jar: a minimal JSON reader and writer
// are below.

import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.sql.Clob;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Timer;
import java.util.TimerTask;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class JtdsClient {
    public static void main(String[] args) throws Exception {
        Map<String, Object> spec = readSpec();
        PrintStream out = resultOut();
        Map<String, Object> res = run(spec);
        out.println(Json.write(res));
        out.flush();
        System.exit(0);
    }

    // readSpec reads the JSON spec on stdin.
    @SuppressWarnings("unchecked")
    static Map<String, Object> readSpec() throws java.io.IOException {
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        InputStream in = System.in;
        byte[] b = new byte[8192];
        for (int n; (n = in.read(b)) > 0; ) buf.write(b, 0, n);
        return (Map<String, Object>) new Json(buf.toString(StandardCharsets.UTF_8)).value();
    }

    // resultOut returns the real stdout for the JSON result and sends
    // System.out to stderr: jTDS may print through DriverManager logging.
    static PrintStream resultOut() {
        PrintStream out = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, StandardCharsets.UTF_8);
        System.setOut(System.err);
        return out;
    }

    static double ms(long t0) {
        return Math.round((System.nanoTime() - t0) / 10000.0) / 100.0;
    }

    static String str(Map<String, Object> m, String k) {
        Object v = m.get(k);
        return v == null ? "" : v.toString();
    }

    static long num(Map<String, Object> m, String k, long dflt) {
        Object v = m.get(k);
        return v instanceof Number ? ((Number) v).longValue() : dflt;
    }

    static Map<String, Object> err(SQLException e) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("number", e.getErrorCode());
        String msg = e.getMessage();
        if (e.getErrorCode() == 0) msg = "SQLState " + e.getSQLState() + ": " + msg;
        m.put("message", msg);
        return m;
    }

    static Map<String, Object> err(Exception e) {
        if (e instanceof SQLException) return err((SQLException) e);
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("number", 0);
        m.put("message", e.getClass().getSimpleName() + ": " + e.getMessage());
        return m;
    }

    static void trustPEM(String path) throws Exception {
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        try (FileInputStream f = new FileInputStream(path)) {
            int i = 0;
            for (Certificate c : cf.generateCertificates(f)) ks.setCertificateEntry("ca" + (i++), c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        SSLContext.setDefault(ctx); // ssl=authenticate uses SSLSocketFactory.getDefault()
    }

    static Map<String, Object> run(Map<String, Object> spec) {
        Map<String, Object> res = new LinkedHashMap<>();
        res.put("client", "jtds");
        res.put("connected", false);
        res.put("connect_ms", 0.0);
        res.put("login_error", null);
        List<Object> steps = new ArrayList<>();
        res.put("steps", steps);

        String enc = str(spec, "encrypt");
        String ssl;
        switch (enc) {
            case "login": ssl = "request"; break;
            case "full": ssl = "require"; break;
            default: ssl = "off";
        }
        long timeout = num(spec, "timeout_s", 30);
        if (timeout <= 0) timeout = 30;
        StringBuilder url = new StringBuilder("jdbc:jtds:sqlserver://");
        url.append(str(spec, "host")).append(':').append(num(spec, "port", 1433));
        if (!str(spec, "database").isEmpty()) url.append('/').append(str(spec, "database"));
        java.util.Properties props = new java.util.Properties();
        props.setProperty("user", str(spec, "user"));
        props.setProperty("password", str(spec, "password"));
        props.setProperty("loginTimeout", Long.toString(timeout));
        if (!str(spec, "app").isEmpty()) props.setProperty("appName", str(spec, "app"));

        long t0 = System.nanoTime();
        Connection conn;
        try {
            Class.forName("net.sourceforge.jtds.jdbc.Driver");
            if (enc.equals("full") && !str(spec, "cafile").isEmpty()) {
                trustPEM(str(spec, "cafile"));
                ssl = "authenticate";
            }
            props.setProperty("ssl", ssl);
            conn = DriverManager.getConnection(url.toString(), props);
        } catch (Exception e) {
            res.put("connect_ms", ms(t0));
            res.put("login_error", err(e));
            return res;
        }
        res.put("connect_ms", ms(t0));
        res.put("connected", true);

        @SuppressWarnings("unchecked")
        List<Object> specSteps = spec.get("steps") instanceof List ? (List<Object>) spec.get("steps") : new ArrayList<>();
        boolean inTran = false;
        for (Object o : specSteps) {
            @SuppressWarnings("unchecked")
            Map<String, Object> st = (Map<String, Object>) o;
            String op = str(st, "op");
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("op", op);
            r.put("ok", false);
            r.put("ms", 0.0);
            List<Object> results = new ArrayList<>();
            List<Object> rowcounts = new ArrayList<>();
            r.put("results", results);
            r.put("rowcounts", rowcounts);
            r.put("error", null);
            r.put("canceled", false);
            long s0 = System.nanoTime();
            try {
                switch (op) {
                    case "query":
                    case "hold":
                        try (Statement s = conn.createStatement()) {
                            boolean isRs = s.execute(str(st, "sql"));
                            readAll(s, isRs, results, rowcounts);
                        }
                        r.put("ok", true);
                        break;
                    case "param": {
                        List<Integer> order = new ArrayList<>();
                        Matcher m = Pattern.compile("@[pP](\\d+)\\b").matcher(str(st, "sql"));
                        StringBuffer sql = new StringBuffer();
                        while (m.find()) {
                            order.add(Integer.parseInt(m.group(1)));
                            m.appendReplacement(sql, "?");
                        }
                        m.appendTail(sql);
                        @SuppressWarnings("unchecked")
                        List<Object> params = st.get("params") instanceof List ? (List<Object>) st.get("params") : new ArrayList<>();
                        try (PreparedStatement ps = conn.prepareStatement(sql.toString())) {
                            for (int i = 0; i < order.size(); i++) {
                                int k = order.get(i) - 1;
                                Object v = k >= 0 && k < params.size() ? params.get(k) : null;
                                bind(ps, i + 1, v);
                            }
                            boolean isRs = ps.execute();
                            readAll(ps, isRs, results, rowcounts);
                        }
                        r.put("ok", true);
                        break;
                    }
                    case "cancel": {
                        final Statement s = conn.createStatement();
                        Timer timer = new Timer(true);
                        final boolean[] fired = {false};
                        timer.schedule(new TimerTask() {
                            public void run() {
                                try {
                                    fired[0] = true;
                                    s.cancel(); // jTDS sends ATTENTION
                                } catch (SQLException ignored) {
                                }
                            }
                        }, Math.max(num(st, "after_ms", 0), 1));
                        try {
                            boolean isRs = s.execute(str(st, "sql"));
                            readAll(s, isRs, results, rowcounts);
                            r.put("ok", true);
                        } catch (SQLException e) {
                            if (fired[0] && ("HY008".equals(e.getSQLState()) || String.valueOf(e.getMessage()).toLowerCase().contains("cancel"))) {
                                r.put("canceled", true);
                                r.put("ok", true);
                            } else {
                                throw e;
                            }
                        } finally {
                            timer.cancel();
                            s.close();
                        }
                        break;
                    }
                    case "begin":
                        conn.setAutoCommit(false);
                        inTran = true;
                        r.put("ok", true);
                        break;
                    case "commit":
                        conn.commit();
                        conn.setAutoCommit(true);
                        inTran = false;
                        r.put("ok", true);
                        break;
                    case "rollback":
                        conn.rollback();
                        conn.setAutoCommit(true);
                        inTran = false;
                        r.put("ok", true);
                        break;
                    case "sleep":
                        Thread.sleep(num(st, "ms", 0));
                        r.put("ok", true);
                        break;
                    default:
                        r.put("unsupported", true);
                        Map<String, Object> e = new LinkedHashMap<>();
                        e.put("number", 0);
                        e.put("message", "unknown op " + op);
                        r.put("error", e);
                }
            } catch (Exception e) {
                r.put("error", err(e));
            }
            r.put("ms", ms(s0));
            steps.add(r);
        }
        try {
            if (inTran) conn.rollback();
            conn.close();
        } catch (SQLException ignored) {
        }
        return res;
    }

    static void bind(PreparedStatement ps, int i, Object v) throws SQLException {
        if (v == null) ps.setNull(i, Types.VARCHAR);
        else if (v instanceof Long) {
            long l = (Long) v;
            if (l >= Integer.MIN_VALUE && l <= Integer.MAX_VALUE) ps.setInt(i, (int) l);
            else ps.setLong(i, l);
        } else if (v instanceof Double) ps.setDouble(i, (Double) v);
        else if (v instanceof Boolean) ps.setBoolean(i, (Boolean) v);
        else if (v instanceof String) ps.setString(i, (String) v);
        else ps.setString(i, Json.write(v));
    }

    static void readAll(Statement s, boolean isRs, List<Object> results, List<Object> rowcounts) throws SQLException {
        while (true) {
            if (isRs) {
                try (ResultSet rs = s.getResultSet()) {
                    ResultSetMetaData md = rs.getMetaData();
                    int n = md.getColumnCount();
                    List<Object> cols = new ArrayList<>();
                    for (int i = 1; i <= n; i++) cols.add(md.getColumnLabel(i));
                    List<Object> rows = new ArrayList<>();
                    while (rs.next()) {
                        List<Object> row = new ArrayList<>();
                        for (int i = 1; i <= n; i++) row.add(value(rs.getObject(i)));
                        rows.add(row);
                    }
                    Map<String, Object> set = new LinkedHashMap<>();
                    set.put("columns", cols);
                    set.put("rows", rows);
                    results.add(set);
                    rowcounts.add((long) rows.size());
                }
            } else {
                int uc = s.getUpdateCount();
                if (uc == -1) break;
                rowcounts.add((long) uc);
            }
            isRs = s.getMoreResults();
        }
    }

    static Object value(Object v) throws SQLException {
        if (v == null) return null;
        if (v instanceof Integer || v instanceof Long || v instanceof Short || v instanceof Byte) return ((Number) v).longValue();
        if (v instanceof Double || v instanceof Float) {
            double d = ((Number) v).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) return Double.toString(d);
            return d;
        }
        if (v instanceof BigDecimal) return ((BigDecimal) v).toPlainString();
        if (v instanceof Boolean || v instanceof String) return v;
        if (v instanceof byte[]) {
            StringBuilder sb = new StringBuilder("0x");
            for (byte x : (byte[]) v) sb.append(String.format("%02X", x));
            return sb.toString();
        }
        if (v instanceof Clob) {
            Clob c = (Clob) v;
            return c.getSubString(1, (int) c.length());
        }
        return v.toString();
    }

    /** Minimal JSON: objects, arrays, strings, numbers (Long or Double), true/false/null. */
    static final class Json {
        private final String s;
        private int i;

        Json(String s) {
            this.s = s;
        }

        Object value() {
            ws();
            char c = s.charAt(i);
            if (c == '{') {
                i++;
                Map<String, Object> m = new LinkedHashMap<>();
                ws();
                if (s.charAt(i) == '}') {
                    i++;
                    return m;
                }
                while (true) {
                    ws();
                    String k = string();
                    ws();
                    expect(':');
                    m.put(k, value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect('}');
                    return m;
                }
            }
            if (c == '[') {
                i++;
                List<Object> l = new ArrayList<>();
                ws();
                if (s.charAt(i) == ']') {
                    i++;
                    return l;
                }
                while (true) {
                    l.add(value());
                    ws();
                    if (s.charAt(i) == ',') {
                        i++;
                        continue;
                    }
                    expect(']');
                    return l;
                }
            }
            if (c == '"') return string();
            if (s.startsWith("true", i)) {
                i += 4;
                return Boolean.TRUE;
            }
            if (s.startsWith("false", i)) {
                i += 5;
                return Boolean.FALSE;
            }
            if (s.startsWith("null", i)) {
                i += 4;
                return null;
            }
            int j = i;
            while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
            String n = s.substring(j, i);
            if (n.isEmpty()) throw new IllegalArgumentException("bad JSON at " + j);
            if (n.indexOf('.') < 0 && n.indexOf('e') < 0 && n.indexOf('E') < 0) {
                try {
                    return Long.parseLong(n);
                } catch (NumberFormatException ignored) {
                }
            }
            return Double.parseDouble(n);
        }

        private void ws() {
            while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
        }

        private void expect(char c) {
            if (s.charAt(i) != c) throw new IllegalArgumentException("expected " + c + " at " + i);
            i++;
        }

        private String string() {
            expect('"');
            StringBuilder sb = new StringBuilder();
            while (true) {
                char c = s.charAt(i++);
                if (c == '"') return sb.toString();
                if (c != '\\') {
                    sb.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'n': sb.append('\n'); break;
                    case 't': sb.append('\t'); break;
                    case 'r': sb.append('\r'); break;
                    case 'b': sb.append('\b'); break;
                    case 'f': sb.append('\f'); break;
                    case 'u':
                        sb.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                        break;
                    default: sb.append(e);
                }
            }
        }

        static String write(Object v) {
            StringBuilder sb = new StringBuilder();
            write(sb, v);
            return sb.toString();
        }

        @SuppressWarnings("unchecked")
        private static void write(StringBuilder sb, Object v) {
            if (v == null) sb.append("null");
            else if (v instanceof String) quote(sb, (String) v);
            else if (v instanceof Boolean || v instanceof Long || v instanceof Integer) sb.append(v);
            else if (v instanceof Double) sb.append(v);
            else if (v instanceof Map) {
                sb.append('{');
                boolean first = true;
                for (Map.Entry<String, Object> e : ((Map<String, Object>) v).entrySet()) {
                    if (!first) sb.append(',');
                    first = false;
                    quote(sb, e.getKey());
                    sb.append(':');
                    write(sb, e.getValue());
                }
                sb.append('}');
            } else if (v instanceof List) {
                sb.append('[');
                boolean first = true;
                for (Object x : (List<Object>) v) {
                    if (!first) sb.append(',');
                    first = false;
                    write(sb, x);
                }
                sb.append(']');
            } else quote(sb, v.toString());
        }

        private static void quote(StringBuilder sb, String s) {
            sb.append('"');
            for (int k = 0; k < s.length(); k++) {
                char c = s.charAt(k);
                switch (c) {
                    case '"': sb.append("\\\""); break;
                    case '\\': sb.append("\\\\"); break;
                    case '\n': sb.append("\\n"); break;
                    case '\r': sb.append("\\r"); break;
                    case '\t': sb.append("\\t"); break;
                    default:
                        if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
                        else sb.append(c);
                }
            }
            sb.append('"');
        }
    }
}
