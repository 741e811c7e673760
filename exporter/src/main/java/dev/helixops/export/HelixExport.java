package dev.helixops.export;

import com.fasterxml.jackson.core.io.schubfach.DoubleToDecimal;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.BufferedReader;
import java.io.DataInputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.math.BigDecimal;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneId;
import java.time.zone.ZoneRulesProvider;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The logical export's reader on the JVM: the same lines as drivers/neo4j_export.py's Python path (its oracle),
 * written straight from Bolt's bytes (its own small Bolt 5.4 client: no value objects, map keys in the order the
 * server sends them, as the Python driver keeps them).
 *
 * <p>stdin: one base64 line each for host, port, user, password, database, the node chunk query, the relationship
 * chunk query, the node and the relationship typed query (drivers.neo4j_values.typed_props_cypher, for the values
 * this cannot write exactly: the Python path's NEEDS_SERVER cases), workers, chunk ids; then one line per part,
 * "n|r lo hi". stdout: a line {"ready":true} once every worker has logged in (or {"error":..,"fallback":true}),
 * then per part, in order, the header line {"count":..,"kinds":{..},"size":..} and size bytes of lines (or
 * {"error":..,"hint":..} and exit 1): the Python export worker's protocol.
 */
public final class HelixExport {

    // ------------------------------------------------------------------------------------------ output bytes

    static final class Buf {
        byte[] b;
        int n;

        Buf(int cap) { b = new byte[cap]; }

        void ensure(int k) {
            if (n + k > b.length) b = Arrays.copyOf(b, Math.max(b.length * 2, n + k));
        }

        void put(int c) { ensure(1); b[n++] = (byte) c; }

        void put(byte[] a, int off, int len) { ensure(len); System.arraycopy(a, off, b, n, len); n += len; }

        void put(byte[] a) { put(a, 0, a.length); }

        void ascii(String s) {
            int len = s.length();
            ensure(len);
            for (int i = 0; i < len; i++) b[n++] = (byte) s.charAt(i);
        }

        void lng(long v) {
            if (v >= 0 && v < 10) { put('0' + (int) v); return; }
            ascii(Long.toString(v));
        }

        void pad(long v, int width) {  // zero-padded, v >= 0
            String s = Long.toString(v);
            for (int i = s.length(); i < width; i++) put('0');
            ascii(s);
        }
    }

    static final byte[] HEX = "0123456789abcdef".getBytes(StandardCharsets.US_ASCII);

    /** A JSON string of UTF-8 bytes, escaped as orjson escapes (short forms, else \\u00xx; the rest as it is). */
    static void jsonString(Buf o, byte[] a, int off, int len) {
        o.ensure(len * 6 + 2);
        byte[] b = o.b;
        int n = o.n;
        b[n++] = '"';
        for (int i = off, end = off + len; i < end; i++) {
            int c = a[i] & 0xff;
            if (c >= 0x20 && c != '"' && c != '\\') { b[n++] = (byte) c; continue; }
            b[n++] = '\\';
            switch (c) {
                case '"': b[n++] = '"'; break;
                case '\\': b[n++] = '\\'; break;
                case '\b': b[n++] = 'b'; break;
                case '\t': b[n++] = 't'; break;
                case '\n': b[n++] = 'n'; break;
                case '\f': b[n++] = 'f'; break;
                case '\r': b[n++] = 'r'; break;
                default:
                    b[n++] = 'u'; b[n++] = '0'; b[n++] = '0'; b[n++] = HEX[c >> 4]; b[n++] = HEX[c & 15];
            }
        }
        b[n++] = '"';
        o.n = n;
    }

    static void jsonString(Buf o, String s) {
        byte[] a = s.getBytes(StandardCharsets.UTF_8);
        jsonString(o, a, 0, a.length);
    }

    /** A finite double as orjson writes it: the shortest digits that read back (as Python's repr), fixed notation
     * for decimal exponents -5..15, else d.ddde±x. */
    static void dbl(Buf o, double d) {
        if (Double.isNaN(d)) { o.ascii("{\"$f\":\"nan\"}"); return; }
        if (Double.isInfinite(d)) { o.ascii(d > 0 ? "{\"$f\":\"inf\"}" : "{\"$f\":\"-inf\"}"); return; }
        if (d == 0) { o.ascii(Double.doubleToRawLongBits(d) < 0 ? "-0.0" : "0.0"); return; }
        double x = Math.abs(d);
        String s = DoubleToDecimal.toString(x);  // Java's format: 123.45, 0.001, 1.2345E-5
        int e = s.indexOf('E');
        String mant = e < 0 ? s : s.substring(0, e);
        int exp = e < 0 ? 0 : Integer.parseInt(s.substring(e + 1));
        int dot = mant.indexOf('.');
        StringBuilder digits = new StringBuilder(mant.length());
        for (int i = 0; i < mant.length(); i++) if (mant.charAt(i) != '.') digits.append(mant.charAt(i));
        exp += (dot < 0 ? mant.length() : dot) - 1;  // the decimal exponent of the first digit
        int lead = 0;
        while (lead < digits.length() - 1 && digits.charAt(lead) == '0') { lead++; exp--; }
        String ds = digits.substring(lead);
        int end = ds.length();
        while (end > 1 && ds.charAt(end - 1) == '0') end--;
        ds = ds.substring(0, end);
        if (ds.length() == 2) {  // Java prefers a closer 2-digit decimal where a 1-digit one reads back: not repr
            String one = shortestOneDigit(x, ds, exp);
            if (one != null) {
                if (one.length() == 2) { ds = "1"; exp += 1; } else ds = one;
            }
        }
        if (d < 0) o.put('-');
        if (exp >= 16 || exp < -5) {
            o.put(ds.charAt(0));
            if (ds.length() > 1) { o.put('.'); o.ascii(ds.substring(1)); }
            o.put('e');
            o.put(exp >= 0 ? '+' : '-');
            o.lng(Math.abs(exp));
        } else if (exp >= 0) {
            if (ds.length() <= exp + 1) {
                o.ascii(ds);
                for (int i = ds.length(); i <= exp; i++) o.put('0');
                o.ascii(".0");
            } else {
                o.ascii(ds.substring(0, exp + 1));
                o.put('.');
                o.ascii(ds.substring(exp + 1));
            }
        } else {
            o.ascii("0.");
            for (int i = -1; i > exp; i--) o.put('0');
            o.ascii(ds);
        }
    }

    /** The 1-digit decimal (as "d" or "10") that reads back as x, the closer one if both do, else null. */
    static String shortestOneDigit(double x, String two, int exp) {
        int lo = two.charAt(0) - '0';
        String best = null;
        BigDecimal bestDist = null;
        BigDecimal exact = new BigDecimal(x);
        for (int c = lo; c <= lo + 1; c++) {
            if (c == 0) continue;
            BigDecimal v = BigDecimal.valueOf(c).scaleByPowerOfTen(exp);
            if (v.doubleValue() != x) continue;
            BigDecimal dist = v.subtract(exact).abs();
            if (bestDist == null || dist.compareTo(bestDist) < 0) { best = Integer.toString(c); bestDist = dist; }
        }
        return best;
    }

    // ------------------------------------------------------------------------------------------ packstream in

    /** The value needs the server's typing (the Python path's NEEDS_SERVER): thrown without a stack trace. */
    static final class Hard extends RuntimeException {
        Hard() { super(null, null, false, false); }
    }

    static final Hard HARD = new Hard();

    static final class BoltFailure extends IOException {
        final String code;

        BoltFailure(String code, String message) { super(message); this.code = code; }
    }

    /** A message's bytes and a read position. */
    static final class In {
        byte[] m = new byte[1 << 16];
        int len;
        int p;

        int u8() { return m[p++] & 0xff; }

        int u16() { int v = ((m[p] & 0xff) << 8) | (m[p + 1] & 0xff); p += 2; return v; }

        int s32() {
            int v = ((m[p] & 0xff) << 24) | ((m[p + 1] & 0xff) << 16) | ((m[p + 2] & 0xff) << 8) | (m[p + 3] & 0xff);
            p += 4;
            return v;
        }

        long s64() { long hi = s32() & 0xffffffffL; long lo = s32() & 0xffffffffL; return (hi << 32) | lo; }

        /** The size of the list, map, string or bytes whose marker is m (after the marker was read). */
        int size(int marker, int tiny8, int base) {
            if ((marker & 0xf0) == tiny8) return marker & 0x0f;
            switch (marker - base) {
                case 0: return u8();
                case 1: return u16();
                case 2: return s32();
                default: throw new IllegalStateException("packstream marker " + marker);
            }
        }

        long integer() {
            int c = u8();
            if (c < 0x80) return c;
            if (c >= 0xf0) return c - 0x100;
            switch (c) {
                case 0xc8: return m[p++];
                case 0xc9: { int v = u16(); return (short) v; }
                case 0xca: return s32();
                case 0xcb: return s64();
                default: throw new IllegalStateException("expected an integer, marker " + c);
            }
        }

        double number() {
            int c = m[p] & 0xff;
            if (c == 0xc1) { p++; return Double.longBitsToDouble(s64()); }
            return integer();
        }

        int listHeader() {
            int c = u8();
            if ((c & 0xf0) == 0x90) return c & 0x0f;
            return size(c, 0x90, 0xd4);
        }

        int mapHeader() {
            int c = u8();
            if ((c & 0xf0) == 0xa0) return c & 0x0f;
            return size(c, 0xa0, 0xd8);
        }

        /** A string's length (its bytes follow at p). */
        int stringHeader() {
            int c = u8();
            if ((c & 0xf0) == 0x80) return c & 0x0f;
            return size(c, 0x80, 0xd0);
        }

        String string() {
            int n = stringHeader();
            String s = new String(m, p, n, StandardCharsets.UTF_8);
            p += n;
            return s;
        }

        boolean isNull() { return (m[p] & 0xff) == 0xc0; }

        void skip() {
            int c = u8();
            if (c < 0x80 || c >= 0xf0 || c == 0xc0 || c == 0xc2 || c == 0xc3) return;
            if (c == 0xc1) { p += 8; return; }
            if (c >= 0xc8 && c <= 0xcb) { p += new int[]{1, 2, 4, 8}[c - 0xc8]; return; }
            if ((c & 0xf0) == 0x80 || (c >= 0xd0 && c <= 0xd2)) {
                int n = size(c, 0x80, 0xd0);  // not p += size(..): that adds to p as it was before size read on
                p += n;
                return;
            }
            if (c >= 0xcc && c <= 0xce) {
                int n = size(c - 0xcc + 0xd0, 0x80, 0xd0);
                p += n;
                return;
            }
            if ((c & 0xf0) == 0x90 || (c >= 0xd4 && c <= 0xd6)) {
                for (int i = size(c, 0x90, 0xd4); i > 0; i--) skip();
                return;
            }
            if ((c & 0xf0) == 0xa0 || (c >= 0xd8 && c <= 0xda)) {
                for (int i = size(c, 0xa0, 0xd8); i > 0; i--) { skip(); skip(); }
                return;
            }
            if ((c & 0xf0) == 0xb0) {
                p++;  // tag
                for (int i = c & 0x0f; i > 0; i--) skip();
                return;
            }
            throw new IllegalStateException("packstream marker " + c);
        }

        /** Any value as a Java object (for the small messages of the protocol: SUCCESS and FAILURE metadata). */
        Object object() {
            int c = m[p] & 0xff;
            if (c == 0xc0) { p++; return null; }
            if (c == 0xc1) { p++; return Double.longBitsToDouble(s64()); }
            if (c == 0xc2 || c == 0xc3) { p++; return c == 0xc3; }
            if (c < 0x80 || c >= 0xf0 || (c >= 0xc8 && c <= 0xcb)) return integer();
            if ((c & 0xf0) == 0x80 || (c >= 0xd0 && c <= 0xd2)) return string();
            if ((c & 0xf0) == 0x90 || (c >= 0xd4 && c <= 0xd6)) {
                int n = listHeader();
                List<Object> l = new ArrayList<>(n);
                for (int i = 0; i < n; i++) l.add(object());
                return l;
            }
            if ((c & 0xf0) == 0xa0 || (c >= 0xd8 && c <= 0xda)) {
                int n = mapHeader();
                Map<String, Object> mm = new LinkedHashMap<>();
                for (int i = 0; i < n; i++) { String k = string(); mm.put(k, object()); }
                return mm;
            }
            skip();
            return "?";
        }
    }

    // ------------------------------------------------------------------------------------------ values -> JSON

    static final Base64.Encoder B64 = Base64.getEncoder();
    static final Set<String> ZONES = ZoneRulesProvider.getAvailableZoneIds();

    /** The value at in.p as the format's JSON (drivers.neo4j_export._encode_hydrated of drivers.neo4j_raw's text). */
    static void value(In in, Buf o) {
        byte[] m = in.m;
        int c = m[in.p] & 0xff;
        if (c < 0x80 || c >= 0xf0 || (c >= 0xc8 && c <= 0xcb)) { o.lng(in.integer()); return; }
        if ((c & 0xf0) == 0x80 || (c >= 0xd0 && c <= 0xd2)) {
            int n = in.stringHeader();
            jsonString(o, m, in.p, n);
            in.p += n;
            return;
        }
        if (c == 0xc1) { in.p++; dbl(o, Double.longBitsToDouble(in.s64())); return; }
        if (c == 0xc2) { in.p++; o.ascii("false"); return; }
        if (c == 0xc3) { in.p++; o.ascii("true"); return; }
        if (c == 0xc0) { in.p++; o.ascii("null"); return; }
        if ((c & 0xf0) == 0x90 || (c >= 0xd4 && c <= 0xd6)) {
            int n = in.listHeader();
            o.put('[');
            for (int i = 0; i < n; i++) {
                if (i > 0) o.put(',');
                value(in, o);
            }
            o.put(']');
            return;
        }
        if (c >= 0xcc && c <= 0xce) {
            in.p++;
            int n = in.size(c - 0xcc + 0xd0, 0x80, 0xd0);
            o.ascii("{\"$b\":\"");
            byte[] enc = B64.encode(Arrays.copyOfRange(m, in.p, in.p + n));
            o.put(enc);
            o.ascii("\"}");
            in.p += n;
            return;
        }
        if ((c & 0xf0) == 0xa0 || (c >= 0xd8 && c <= 0xda)) {  // not a property value; written as the Python path would
            int n = in.mapHeader();
            o.put('{');
            for (int i = 0; i < n; i++) {
                if (i > 0) o.put(',');
                value(in, o);
                o.put(':');
                value(in, o);
            }
            o.put('}');
            return;
        }
        if ((c & 0xf0) == 0xb0) { in.p++; structure(in, o, c & 0x0f, in.u8()); return; }
        throw new IllegalStateException("packstream marker " + c);
    }

    static void structure(In in, Buf o, int fields, int tag) {
        switch (tag) {
            case 'D': o.ascii("{\"$date\":\""); date(o, in.integer()); o.ascii("\"}"); return;
            case 't': o.ascii("{\"$ltime\":\""); time(o, in.integer()); o.ascii("\"}"); return;
            case 'T': {
                long nanos = in.integer();
                long offset = in.integer();
                checkOffset(offset);
                o.ascii("{\"$time\":\"");
                time(o, nanos);
                offset(o, offset);
                o.ascii("\"}");
                return;
            }
            case 'd': {
                long secs = in.integer();
                long nanos = in.integer();
                o.ascii("{\"$ldt\":\"");
                local(o, secs, nanos);
                o.ascii("\"}");
                return;
            }
            case 'I': {
                long secs = in.integer();
                long nanos = in.integer();
                long offset = in.integer();
                checkOffset(offset);
                o.ascii("{\"$dt\":\"");
                local(o, secs + offset, nanos);
                offset(o, offset);
                o.ascii("\"}");
                return;
            }
            case 'i': {
                long secs = in.integer();
                long nanos = in.integer();
                String zone = in.string();
                long offset = zoneOffset(secs, zone);
                o.ascii("{\"$dt\":\"");
                local(o, secs + offset, nanos);
                offset(o, offset);
                o.put('[');
                byte[] z = zone.getBytes(StandardCharsets.UTF_8);
                o.put(z);
                o.ascii("]\"}");
                return;
            }
            case 'E': {
                o.ascii("{\"$dur\":[");
                for (int i = 0; i < 4; i++) {
                    if (i > 0) o.put(',');
                    o.lng(in.integer());
                }
                o.ascii("]}");
                return;
            }
            case 'X':
            case 'Y': {
                o.ascii("{\"$pt\":");
                o.lng(in.integer());
                o.ascii(",\"c\":[");
                for (int i = 1; i < fields; i++) {
                    if (i > 1) o.put(',');
                    dbl(o, in.number());
                }
                o.ascii("]}");
                return;
            }
            default:
                throw HARD;
        }
    }

    static final long MIN_PY_SECONDS = -62135596800L;  // 0001-01-01T00:00:00Z
    static final long MAX_PY_SECONDS = 253402300799L;  // 9999-12-31T23:59:59Z

    /** A zone's offset at a UTC second, where Python's datetime and zoneinfo give it (else HARD, as there). */
    static long zoneOffset(long utc, String zone) {
        if (utc < MIN_PY_SECONDS || utc > MAX_PY_SECONDS || !ZONES.contains(zone)) throw HARD;
        long offset = ZoneId.of(zone).getRules().getOffset(Instant.ofEpochSecond(utc)).getTotalSeconds();
        long local = utc + offset;
        if (local < MIN_PY_SECONDS || local > MAX_PY_SECONDS) throw HARD;
        checkOffset(offset);
        return offset;
    }

    static void checkOffset(long offset) {
        if (offset % 60 != 0) throw HARD;  // Neo4j writes no seconds of an offset it can read back
    }

    static void date(Buf o, long days) {  // H. Hinnant's civil_from_days, any year (drivers.neo4j_raw.civil)
        long z = days + 719_468;
        long era = Math.floorDiv(z, 146_097);
        long doe = z - era * 146_097;
        long yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        long y = yoe + era * 400;
        long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        long mp = (5 * doy + 2) / 153;
        long d = doy - (153 * mp + 2) / 5 + 1;
        long mo = mp < 10 ? mp + 3 : mp - 9;
        if (mo <= 2) y++;
        if (y > 9999) { o.put('+'); o.lng(y); } else if (y < 0) { o.put('-'); o.pad(-y, 4); } else o.pad(y, 4);
        o.put('-');
        o.pad(mo, 2);
        o.put('-');
        o.pad(d, 2);
    }

    static void time(Buf o, long nanos) {
        long secs = Math.floorDiv(nanos, 1_000_000_000L);
        long ns = Math.floorMod(nanos, 1_000_000_000L);
        o.pad(secs / 3600, 2);
        o.put(':');
        o.pad(secs % 3600 / 60, 2);
        o.put(':');
        o.pad(secs % 60, 2);
        if (ns != 0) {
            int w = 9;
            while (ns % 10 == 0) { ns /= 10; w--; }
            o.put('.');
            o.pad(ns, w);
        }
    }

    static void local(Buf o, long seconds, long nanos) {
        date(o, Math.floorDiv(seconds, 86_400));
        o.put('T');
        time(o, Math.floorMod(seconds, 86_400) * 1_000_000_000L + nanos);
    }

    static void offset(Buf o, long seconds) {
        if (seconds == 0) { o.put('Z'); return; }
        o.put(seconds < 0 ? '-' : '+');
        long mins = Math.abs(seconds) / 60;
        o.pad(mins / 60, 2);
        o.put(':');
        o.pad(mins % 60, 2);
    }

    // ------------------------------------------------------------------------------------------ Bolt

    static final class Packer {
        final Buf b = new Buf(256);

        Packer struct(int fields, int tag) { b.put(0xb0 + fields); b.put(tag); return this; }

        Packer map(int n) { b.put(0xa0 + n); return this; }  // n < 16 here

        Packer str(String s) {
            byte[] a = s.getBytes(StandardCharsets.UTF_8);
            int n = a.length;
            if (n < 16) b.put(0x80 + n);
            else if (n < 256) { b.put(0xd0); b.put(n); }
            else if (n < 65536) { b.put(0xd1); b.put(n >> 8); b.put(n); }
            else { b.put(0xd2); b.put(n >>> 24); b.put(n >> 16); b.put(n >> 8); b.put(n); }
            b.put(a);
            return this;
        }

        Packer integer(long v) {
            if (v >= -16 && v < 128) b.put((int) v & 0xff);
            else if (v >= -128 && v < 128) { b.put(0xc8); b.put((int) v); }
            else if (v >= -32768 && v < 32768) { b.put(0xc9); b.put((int) (v >> 8)); b.put((int) v); }
            else if (v >= Integer.MIN_VALUE && v <= Integer.MAX_VALUE) {
                b.put(0xca);
                for (int s = 24; s >= 0; s -= 8) b.put((int) (v >> s));
            } else {
                b.put(0xcb);
                for (int s = 56; s >= 0; s -= 8) b.put((int) (v >> s));
            }
            return this;
        }
    }

    static final class Bolt implements AutoCloseable {
        final Socket socket;
        final DataInputStream in;
        final OutputStream out;
        final In msg = new In();

        Bolt(String host, int port, String user, String password) throws IOException {
            socket = new Socket();
            socket.setTcpNoDelay(true);
            socket.connect(new InetSocketAddress(host, port), 15_000);
            in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
            out = new BufferedOutputStream(socket.getOutputStream(), 1 << 14);
            out.write(new byte[]{0x60, 0x60, (byte) 0xb0, 0x17, 0, 0, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
            out.flush();
            int version = in.readInt();
            if (version != 0x0405) throw new BoltFailure("Helix.Unsupported", "the server does not speak Bolt 5.4");
            Packer hello = new Packer().struct(1, 0x01).map(2).str("user_agent").str("helix-export/1")
                    .str("bolt_agent").map(1).str("product").str("helix-export/1");
            Packer logon = new Packer().struct(1, 0x6a).map(3).str("scheme").str("basic").str("principal").str(user)
                    .str("credentials").str(password);
            send(hello);
            send(logon);
            out.flush();
            success();
            success();
        }

        void send(Packer p) throws IOException {
            byte[] b = p.b.b;
            for (int off = 0; off < p.b.n; off += 0xffff) {
                int n = Math.min(0xffff, p.b.n - off);
                out.write(n >> 8);
                out.write(n);
                out.write(b, off, n);
            }
            out.write(0);
            out.write(0);
        }

        /** The next message into msg; returns its signature (msg.p at its first field). */
        int read() throws IOException {
            In m = msg;
            m.len = 0;
            while (true) {
                int n = in.readUnsignedShort();
                if (n == 0) {
                    if (m.len == 0) continue;  // a NOOP
                    break;
                }
                if (m.len + n > m.m.length) m.m = Arrays.copyOf(m.m, Math.max(m.m.length * 2, m.len + n));
                in.readFully(m.m, m.len, n);
                m.len += n;
            }
            m.p = 2;
            return m.m[1] & 0xff;
        }

        /** Reads a SUCCESS (its metadata skipped), or throws the FAILURE. */
        void success() throws IOException {
            int sig = read();
            if (sig == 0x70) return;
            throw failure(sig);
        }

        @SuppressWarnings("unchecked")
        BoltFailure failure(int sig) {
            if (sig == 0x7f) {
                Map<String, Object> meta = (Map<String, Object>) msg.object();
                return new BoltFailure(String.valueOf(meta.get("code")), String.valueOf(meta.get("message")));
            }
            return new BoltFailure("Helix.Protocol", "unexpected Bolt message 0x" + Integer.toHexString(sig));
        }

        void begin(String database) throws IOException {
            send(new Packer().struct(1, 0x11).map(2).str("db").str(database).str("mode").str("r"));
            out.flush();
        }

        /** RUN and PULL all, pipelined (answers read by the caller: SUCCESS, RECORDs, SUCCESS). */
        void run(String query, String param, long value) throws IOException {
            Packer p = new Packer().struct(3, 0x10).str(query);
            if (param == null) p.map(0);
            else p.map(1).str(param).integer(value);
            p.map(0);
            send(p);
            send(new Packer().struct(1, 0x3f).map(1).str("n").integer(-1));
            out.flush();
        }

        void runParams(String query, long lo, long hi) throws IOException {
            Packer p = new Packer().struct(3, 0x10).str(query).map(2).str("lo").integer(lo).str("hi").integer(hi).map(0);
            send(p);
            send(new Packer().struct(1, 0x3f).map(1).str("n").integer(-1));
            out.flush();
        }

        void commit() throws IOException {
            send(new Packer().struct(0, 0x12));
            out.flush();
            success();
        }

        @Override
        public void close() {
            try {
                send(new Packer().struct(0, 0x02));
                out.flush();
            } catch (IOException ignored) {
                // closing anyway
            }
            try {
                socket.close();
            } catch (IOException ignored) {
                // closed
            }
        }
    }

    // ------------------------------------------------------------------------------------------ parts

    static final class Config {
        String host, user, password, database, nodeQuery, relQuery, nodeTyped, relTyped;
        int port, workers, chunk;
        final List<long[]> parts = new ArrayList<>();  // {kind 'n'|'r', lo, hi}
    }

    static final class Part {
        final Buf body = new Buf(1 << 16);
        long count;
        final Map<String, Long> kinds = new LinkedHashMap<>();
        byte[] head;
    }

    /** An entity whose values only the server can type: where its line goes, its line's start, and its id. */
    record Deferred(int at, byte[] prefix, long id) {
    }

    static Part exportPart(Bolt bolt, Config cfg, long[] spec) throws IOException {
        Part part = new Part();
        boolean nodes = spec[0] == 'n';
        bolt.begin(cfg.database);
        bolt.success();
        List<Deferred> deferred = new ArrayList<>();
        for (long c = spec[1]; c <= spec[2]; c += cfg.chunk) {
            bolt.runParams(nodes ? cfg.nodeQuery : cfg.relQuery, c, Math.min(spec[2], c + cfg.chunk - 1));
            bolt.success();
            List<Deferred> here = new ArrayList<>();
            int sig;
            while ((sig = bolt.read()) == 0x71) {
                In in = bolt.msg;
                if (in.listHeader() != 1) throw new IOException("a chunk's record holds one field");
                int n = in.listHeader();
                for (int k = 0; k < n; k++) {
                    if (nodes) node(in, part, here); else relationship(in, part, here);
                }
            }
            if (sig != 0x70) throw bolt.failure(sig);
            for (Deferred d : here) deferred.add(typed(bolt, cfg, nodes, d));
        }
        bolt.commit();
        if (!deferred.isEmpty()) splice(part, deferred);
        Buf h = new Buf(256);
        h.ascii("{\"count\":");
        h.lng(part.count);
        h.ascii(",\"kinds\":{");
        boolean first = true;
        for (Map.Entry<String, Long> e : part.kinds.entrySet()) {
            if (!first) h.put(',');
            first = false;
            jsonString(h, e.getKey());
            h.put(':');
            h.lng(e.getValue());
        }
        h.ascii("},\"size\":");
        h.lng(part.body.n);
        h.ascii("}\n");
        part.head = Arrays.copyOf(h.b, h.n);
        return part;
    }

    static void kind(Part part, String k) { part.kinds.merge(k, 1L, Long::sum); }

    static void node(In in, Part part, List<Deferred> here) {
        Buf o = part.body;
        int start = o.n;
        in.listHeader();
        long id = in.integer();
        o.ascii("{\"n\":");
        o.lng(id);
        o.ascii(",\"l\":[");
        int labels = in.listHeader();
        for (int i = 0; i < labels; i++) {
            if (i > 0) o.put(',');
            int before = in.p;
            String label = in.string();
            kind(part, label);
            in.p = before;
            value(in, o);
        }
        o.ascii("],\"p\":{");
        part.count++;
        int propsAt = in.p;
        int prefixEnd = o.n;
        try {
            props(in, o);
            o.ascii("}}\n");
        } catch (Hard h) {
            byte[] prefix = Arrays.copyOfRange(o.b, start, prefixEnd);
            o.n = start;
            in.p = propsAt;
            in.skip();
            here.add(new Deferred(start, prefix, id));
        }
    }

    static void relationship(In in, Part part, List<Deferred> here) {
        Buf o = part.body;
        int start = o.n;
        in.listHeader();
        int before = in.p;
        kind(part, in.string());
        in.p = before;
        o.ascii("{\"r\":");
        value(in, o);
        o.ascii(",\"s\":");
        o.lng(in.integer());
        o.ascii(",\"e\":");
        o.lng(in.integer());
        o.ascii(",\"p\":{");
        part.count++;
        int propsAt = in.p;
        int prefixEnd = o.n;
        try {
            props(in, o);
            o.ascii("}}\n");
            in.skip();  // the id
        } catch (Hard h) {
            byte[] prefix = Arrays.copyOfRange(o.b, start, prefixEnd);
            o.n = start;
            in.p = propsAt;
            in.skip();
            here.add(new Deferred(start, prefix, in.integer()));
        }
    }

    static void props(In in, Buf o) {
        int n = in.mapHeader();
        for (int i = 0; i < n; i++) {
            if (i > 0) o.put(',');
            value(in, o);  // the key
            o.put(':');
            value(in, o);
        }
    }

    /** One entity's line from the server's typing (drivers.neo4j_values.props_from_typed, in its order). */
    static Deferred typed(Bolt bolt, Config cfg, boolean nodes, Deferred d) throws IOException {
        bolt.run(nodes ? cfg.nodeTyped : cfg.relTyped, "i", d.id());
        bolt.success();
        Buf o = new Buf(1024);
        o.put(d.prefix());
        int sig;
        int records = 0;
        while ((sig = bolt.read()) == 0x71) {
            records++;
            In in = bolt.msg;
            in.listHeader();
            int n = in.listHeader();
            for (int i = 0; i < n; i++) {
                if (i > 0) o.put(',');
                in.listHeader();  // [key, tag, value]
                value(in, o);
                o.put(':');
                if (in.isNull()) {
                    in.p++;
                    try {
                        value(in, o);
                    } catch (Hard h) {
                        throw new IOException("a property value of a type this export does not know");
                    }
                    continue;
                }
                String tag = in.string();
                if (tag.endsWith("[]")) {
                    byte[] t = tag.substring(0, tag.length() - 2).getBytes(StandardCharsets.UTF_8);
                    int items = in.listHeader();
                    o.put('[');
                    for (int k = 0; k < items; k++) {
                        if (k > 0) o.put(',');
                        o.put('{');
                        jsonString(o, t, 0, t.length);
                        o.put(':');
                        value(in, o);
                        o.put('}');
                    }
                    o.put(']');
                } else {
                    o.put('{');
                    jsonString(o, tag);
                    o.put(':');
                    value(in, o);
                    o.put('}');
                }
            }
        }
        if (sig != 0x70) throw bolt.failure(sig);
        if (records != 1) throw new IOException("the typed read of entity " + d.id() + " returned " + records + " records");
        o.ascii("}}\n");
        return new Deferred(d.at(), Arrays.copyOf(o.b, o.n), d.id());
    }

    static void splice(Part part, List<Deferred> lines) {
        Buf old = part.body;
        int extra = 0;
        for (Deferred d : lines) extra += d.prefix().length;
        byte[] out = new byte[old.n + extra];
        int from = 0;
        int to = 0;
        for (Deferred d : lines) {
            int n = d.at() - from;
            System.arraycopy(old.b, from, out, to, n);
            to += n;
            from = d.at();
            System.arraycopy(d.prefix(), 0, out, to, d.prefix().length);
            to += d.prefix().length;
        }
        System.arraycopy(old.b, from, out, to, old.n - from);
        old.b = out;
        old.n = out.length;
    }

    // ------------------------------------------------------------------------------------------ main

    static String b64line(BufferedReader r) throws IOException {
        String line = r.readLine();
        if (line == null) throw new IOException("configuration ended early");
        return new String(Base64.getDecoder().decode(line.trim()), StandardCharsets.UTF_8);
    }

    static void line(OutputStream out, Buf b) throws IOException {
        out.write(b.b, 0, b.n);
        out.flush();
    }

    static Buf error(String message, String hint, boolean fallback) {
        Buf b = new Buf(256);
        b.ascii("{\"error\":");
        jsonString(b, message);
        b.ascii(",\"hint\":");
        jsonString(b, hint);
        if (fallback) b.ascii(",\"fallback\":true");
        b.ascii("}\n");
        return b;
    }

    public static void main(String[] args) throws Exception {
        BufferedReader r = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        Config cfg = new Config();
        cfg.host = b64line(r);
        cfg.port = Integer.parseInt(b64line(r));
        cfg.user = b64line(r);
        cfg.password = b64line(r);
        cfg.database = b64line(r);
        cfg.nodeQuery = b64line(r);
        cfg.relQuery = b64line(r);
        cfg.nodeTyped = b64line(r);
        cfg.relTyped = b64line(r);
        cfg.workers = Math.max(1, Integer.parseInt(b64line(r)));
        cfg.chunk = Integer.parseInt(b64line(r));
        for (String l; (l = r.readLine()) != null; ) {
            String[] f = l.trim().split(" ");
            if (f.length == 3) cfg.parts.add(new long[]{f[0].charAt(0), Long.parseLong(f[1]), Long.parseLong(f[2])});
        }
        OutputStream out = new FileOutputStream(FileDescriptor.out);
        Bolt[] bolts = new Bolt[cfg.workers];
        try {
            for (int i = 0; i < bolts.length; i++) bolts[i] = new Bolt(cfg.host, cfg.port, cfg.user, cfg.password);
        } catch (IOException e) {
            for (Bolt b : bolts) if (b != null) b.close();
            String code = e instanceof BoltFailure f ? f.code + " " : e.getClass().getSimpleName() + ": ";
            line(out, error("Neo4j at bolt://" + cfg.host + ":" + cfg.port + ": " + code + e.getMessage(),
                    "is the server up and the password right?", true));
            System.exit(2);
        }
        Buf ready = new Buf(32);
        ready.ascii("{\"ready\":true}\n");
        line(out, ready);
        int exit = new Runner(cfg, bolts, out).run();
        for (Bolt b : bolts) b.close();
        out.flush();
        System.exit(exit);
    }

    /** Worker threads, one connection each, take parts in turn; the main thread writes them in order, at most
     * 2 parts per worker ahead of the writer (memory bounded by the part size, as in the Python path). */
    static final class Runner {
        final Config cfg;
        final Bolt[] bolts;
        final OutputStream out;
        final Part[] done;
        final String[] failed;
        int next;
        int written;

        Runner(Config cfg, Bolt[] bolts, OutputStream out) {
            this.cfg = cfg;
            this.bolts = bolts;
            this.out = out;
            done = new Part[cfg.parts.size()];
            failed = new String[cfg.parts.size()];
        }

        synchronized int take() throws InterruptedException {
            while (next < done.length && next >= written + 2 * bolts.length) wait();
            return next < done.length ? next++ : -1;
        }

        int run() throws Exception {
            Thread[] threads = new Thread[bolts.length];
            for (int i = 0; i < bolts.length; i++) {
                Bolt bolt = bolts[i];
                threads[i] = new Thread(() -> {
                    try {
                        for (int k; (k = take()) >= 0; ) {
                            Part p;
                            try {
                                p = exportPart(bolt, cfg, cfg.parts.get(k));
                            } catch (BoltFailure e) {
                                fail(k, "Neo4j at bolt://" + cfg.host + ":" + cfg.port + ": " + e.code + " " + e.getMessage()
                                        + " while exporting");
                                return;
                            } catch (IOException | RuntimeException e) {
                                e.printStackTrace();
                                fail(k, "Neo4j at bolt://" + cfg.host + ":" + cfg.port + ": " + e.getClass().getSimpleName()
                                        + " while exporting: " + e.getMessage());
                                return;
                            }
                            synchronized (this) {
                                done[k] = p;
                                notifyAll();
                            }
                        }
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }, "export-" + i);
                threads[i].setDaemon(true);
                threads[i].start();
            }
            for (int k = 0; k < done.length; k++) {
                Part p;
                synchronized (this) {
                    while (done[k] == null && failed[k] == null) wait();
                    if (failed[k] != null) {
                        line(out, error(failed[k], "is the server up and the password right?", false));
                        return 1;
                    }
                    p = done[k];
                    done[k] = null;
                }
                out.write(p.head);
                out.write(p.body.b, 0, p.body.n);
                out.flush();
                synchronized (this) {
                    written = k + 1;
                    notifyAll();
                }
            }
            return 0;
        }

        synchronized void fail(int k, String message) {
            failed[k] = message;
            for (int j = k; j < failed.length; j++) if (failed[j] == null) failed[j] = message;
            notifyAll();
        }
    }
}
