package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ---------------------------------------------------------------------------
// helpers

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func mustConfig(t *testing.T, env map[string]string, forced string) config {
	t.Helper()
	cfg, err := loadConfig(envMap(env), "vtest", forced)
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	return cfg
}

type healthBody struct {
	Status  string                 `json:"status"`
	Service string                 `json:"service"`
	Version string                 `json:"version"`
	Error   string                 `json:"error"`
	Checks  map[string]checkResult `json:"checks"`
}

// getHealth calls /api/health on h and returns code, raw body and decoded body.
func getHealth(t *testing.T, h http.Handler) (int, string, healthBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
	raw := rec.Body.String()
	var hb healthBody
	if err := json.Unmarshal([]byte(raw), &hb); err != nil {
		t.Fatalf("health body is not JSON: %v\n%s", err, raw)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	return rec.Code, raw, hb
}

// closedPort returns a 127.0.0.1 port that nothing listens on.
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// ---------------------------------------------------------------------------
// fake Redis

type fakeRedis struct {
	ln          net.Listener
	password    string // "" = no auth required
	echoSecrets bool   // misbehave: echo the attempted password in errors
	conns       atomic.Int64
}

func startFakeRedis(t *testing.T, password string) *fakeRedis {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRedis{ln: ln, password: password}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go f.handle(c)
		}
	}()
	return f
}

func (f *fakeRedis) port() string { return strconv.Itoa(f.ln.Addr().(*net.TCPAddr).Port) }

func (f *fakeRedis) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	authed := f.password == ""
	for {
		args, err := readRESPArray(r)
		if err != nil {
			return
		}
		var reply string
		switch strings.ToUpper(args[0]) {
		case "AUTH":
			if len(args) == 2 && args[1] == f.password {
				authed = true
				reply = "+OK"
			} else if f.echoSecrets && len(args) == 2 {
				reply = "-ERR bad password " + args[1]
			} else {
				reply = "-WRONGPASS invalid username-password pair or user is disabled."
			}
		case "PING":
			if !authed {
				reply = "-NOAUTH Authentication required."
			} else {
				reply = "+PONG"
			}
		default:
			reply = "-ERR unknown command"
		}
		if _, err := io.WriteString(c, reply+"\r\n"); err != nil {
			return
		}
	}
}

func readRESPArray(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "*") {
		return nil, fmt.Errorf("not an array: %q", line)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 1 {
		return nil, fmt.Errorf("bad array len %q", line)
	}
	args := make([]string, 0, n)
	for i := 0; i < n; i++ {
		hdr, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(hdr, "$") {
			return nil, fmt.Errorf("not a bulk string: %q", hdr)
		}
		l, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		if err != nil || l < 0 {
			return nil, fmt.Errorf("bad bulk len %q", hdr)
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:l]))
	}
	return args, nil
}

// ---------------------------------------------------------------------------
// fake Neo4j (minimal Bolt 5.0 server: handshake, HELLO with basic auth)

type fakeBolt struct {
	ln       net.Listener
	user     string
	password string
	hellos   atomic.Int64
}

func startFakeBolt(t *testing.T, user, password string) *fakeBolt {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBolt{ln: ln, user: user, password: password}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.handle(c)
		}
	}()
	return f
}

func (f *fakeBolt) uri() string { return "bolt://" + f.ln.Addr().String() }

func psString(s string) []byte {
	switch n := len(s); {
	case n < 16:
		return append([]byte{0x80 | byte(n)}, s...)
	case n < 256:
		return append([]byte{0xD0, byte(n)}, s...)
	default:
		panic("string too long for fake")
	}
}

// psMessage builds a PackStream struct with one map field of string values.
func psMessage(sig byte, kv ...string) []byte {
	b := []byte{0xB1, sig, 0xA0 | byte(len(kv)/2)}
	for _, s := range kv {
		b = append(b, psString(s)...)
	}
	return b
}

func writeChunked(w io.Writer, msg []byte) error {
	out := make([]byte, 0, len(msg)+4)
	out = binary.BigEndian.AppendUint16(out, uint16(len(msg)))
	out = append(out, msg...)
	out = append(out, 0, 0)
	_, err := w.Write(out)
	return err
}

func readChunked(r io.Reader) ([]byte, error) {
	var msg []byte
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint16(hdr[:])
		if n == 0 {
			if len(msg) == 0 { // NOOP keep-alive
				continue
			}
			return msg, nil
		}
		chunk := make([]byte, n)
		if _, err := io.ReadFull(r, chunk); err != nil {
			return nil, err
		}
		msg = append(msg, chunk...)
	}
}

func (f *fakeBolt) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hs := make([]byte, 20)
	if _, err := io.ReadFull(c, hs); err != nil {
		return
	}
	if !bytes.Equal(hs[:4], []byte{0x60, 0x60, 0xB0, 0x17}) {
		return
	}
	if _, err := c.Write([]byte{0, 0, 0, 5}); err != nil { // Bolt 5.0
		return
	}
	for {
		msg, err := readChunked(c)
		if err != nil || len(msg) < 2 {
			return
		}
		var reply []byte
		switch msg[1] {
		case 0x01, 0x6A: // HELLO (5.0 carries credentials), LOGON (5.1+)
			f.hellos.Add(1)
			if bytes.Contains(msg, psString("credentials")) &&
				(!bytes.Contains(msg, psString(f.password)) || !bytes.Contains(msg, psString(f.user))) {
				reply = psMessage(0x7F,
					"code", "Neo.ClientError.Security.Unauthorized",
					"message", "The client is unauthorized due to authentication failure.")
			} else {
				reply = psMessage(0x70, "server", "Neo4j/5.26.0", "connection_id", "bolt-1")
			}
		case 0x02: // GOODBYE
			return
		default: // RESET etc.
			reply = psMessage(0x70)
		}
		if err := writeChunked(c, reply); err != nil {
			return
		}
	}
}

// ---------------------------------------------------------------------------
// health JSON shape and basics

func TestHealthShapeNoChecks(t *testing.T) {
	cfg := mustConfig(t, map[string]string{}, "false")
	code, raw, hb := getHealth(t, newHandler(cfg))
	if code != http.StatusOK {
		t.Fatalf("code = %d, want 200; body %s", code, raw)
	}
	var generic map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range generic {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "checks,service,status,version" {
		t.Errorf("top-level keys = %s", got)
	}
	if string(generic["checks"]) != "{}" {
		t.Errorf("checks = %s, want {} (not null)", generic["checks"])
	}
	if hb.Status != "ok" || hb.Service != "probe" || hb.Version != "vtest" {
		t.Errorf("got %+v", hb)
	}
}

func TestHealthShapeWithChecks(t *testing.T) {
	fr := startFakeRedis(t, "")
	cfg := mustConfig(t, map[string]string{
		"HELIX_SERVICE": "mcp-memory",
		"REDIS_HOST":    "127.0.0.1",
		"REDIS_PORT":    fr.port(),
	}, "")
	code, raw, hb := getHealth(t, newHandler(cfg))
	if code != http.StatusOK || hb.Status != "ok" || hb.Service != "mcp-memory" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	var generic struct {
		Checks map[string]map[string]json.RawMessage `json:"checks"`
	}
	if err := json.Unmarshal([]byte(raw), &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic.Checks) != 1 {
		t.Fatalf("want only the redis check, got %s", raw)
	}
	rc := generic.Checks["redis"]
	for _, k := range []string{"ok", "target", "error"} {
		if _, ok := rc[k]; !ok {
			t.Errorf("redis check lacks %q: %s", k, raw)
		}
	}
	if string(rc["ok"]) != "true" || string(rc["target"]) != strconv.Quote("127.0.0.1:"+fr.port()) {
		t.Errorf("redis check = %s", raw)
	}
}

func TestRootAndSlow(t *testing.T) {
	cfg := mustConfig(t, map[string]string{"HELIX_SERVICE": "dashboard"}, "")
	h := newHandler(cfg)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != 200 || rec.Body.String() != "dashboard vtest\n" {
		t.Errorf("GET / = %d %q", rec.Code, rec.Body.String())
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", rec.Code)
	}

	start := time.Now()
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/slow?ms=150", nil))
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("slow returned after %v, want >= 150ms", el)
	}
	if rec.Code != 200 || rec.Body.String() != "slept 150 ms\n" {
		t.Errorf("slow = %d %q", rec.Code, rec.Body.String())
	}

	for _, bad := range []string{"abc", "-1"} {
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/slow?ms="+bad, nil))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("slow?ms=%s = %d, want 400", bad, rec.Code)
		}
	}

	for in, want := range map[string]int{"": 0, "0": 0, "250": 250, "5000": 5000, "99999": 5000} {
		got, err := parseSlowMs(in)
		if err != nil || got != want {
			t.Errorf("parseSlowMs(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// ---------------------------------------------------------------------------
// Redis checks

func redisEnv(port, password string) map[string]string {
	return map[string]string{
		"REDIS_HOST":           "127.0.0.1",
		"REDIS_PORT":           port,
		"REDIS_PASSWORD":       password,
		"PROBE_CHECK_CACHE_MS": "0",
	}
}

func TestRedisHealthy(t *testing.T) {
	fr := startFakeRedis(t, "c0rrect-horse")
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, redisEnv(fr.port(), "c0rrect-horse"), "")))
	if code != 200 || hb.Status != "ok" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	rc := hb.Checks["redis"]
	if !rc.OK || rc.Error != "" || rc.Target != "127.0.0.1:"+fr.port() {
		t.Errorf("redis check = %+v", rc)
	}
	if strings.Contains(raw, "c0rrect-horse") {
		t.Errorf("body contains password: %s", raw)
	}
}

func TestRedisWrongPassword(t *testing.T) {
	fr := startFakeRedis(t, "c0rrect-horse")
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, redisEnv(fr.port(), "wr0ng-battery"), "")))
	if code != http.StatusServiceUnavailable || hb.Status != "unhealthy" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	rc := hb.Checks["redis"]
	if rc.OK || !strings.Contains(rc.Error, "WRONGPASS") || rc.Target != "127.0.0.1:"+fr.port() {
		t.Errorf("redis check = %+v", rc)
	}
	if strings.Contains(raw, "wr0ng-battery") || strings.Contains(raw, "c0rrect-horse") {
		t.Errorf("body contains a password: %s", raw)
	}
}

func TestRedisMissingPassword(t *testing.T) {
	fr := startFakeRedis(t, "c0rrect-horse")
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, redisEnv(fr.port(), ""), "")))
	if code != http.StatusServiceUnavailable || !strings.Contains(hb.Checks["redis"].Error, "NOAUTH") {
		t.Fatalf("code=%d body=%s", code, raw)
	}
}

func TestRedisUnreachable(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, redisEnv(port, "s3cr3t-pw"), "")))
	if code != http.StatusServiceUnavailable || hb.Status != "unhealthy" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	rc := hb.Checks["redis"]
	if rc.OK || rc.Error == "" || rc.Target != "127.0.0.1:"+port {
		t.Errorf("redis check = %+v", rc)
	}
	if strings.Contains(raw, "s3cr3t-pw") {
		t.Errorf("body contains password: %s", raw)
	}
}

func TestErrorsAreRedacted(t *testing.T) {
	fr := startFakeRedis(t, "c0rrect-horse")
	fr.echoSecrets = true // server puts the attempted password into its error
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, redisEnv(fr.port(), "leaky-pw-123"), "")))
	if code != http.StatusServiceUnavailable {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	if strings.Contains(raw, "leaky-pw-123") {
		t.Fatalf("password leaked: %s", raw)
	}
	if !strings.Contains(hb.Checks["redis"].Error, "bad password "+redactedMarker) {
		t.Errorf("expected redacted marker in error, got %q", hb.Checks["redis"].Error)
	}
}

func TestCheckCache(t *testing.T) {
	fr := startFakeRedis(t, "")
	env := redisEnv(fr.port(), "")
	env["PROBE_CHECK_CACHE_MS"] = "300"
	h := newHandler(mustConfig(t, env, ""))
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/health", nil))
			if rec.Code != 200 {
				t.Errorf("code %d", rec.Code)
			}
		}()
	}
	wg.Wait()
	if n := fr.conns.Load(); n != 1 {
		t.Errorf("20 concurrent requests within TTL made %d redis connections, want 1", n)
	}
	time.Sleep(350 * time.Millisecond)
	getHealth(t, h)
	if n := fr.conns.Load(); n != 2 {
		t.Errorf("after TTL expiry: %d connections, want 2", n)
	}

	// Cache disabled: every request checks.
	fr2 := startFakeRedis(t, "")
	h2 := newHandler(mustConfig(t, redisEnv(fr2.port(), ""), ""))
	for i := 0; i < 3; i++ {
		getHealth(t, h2)
	}
	if n := fr2.conns.Load(); n != 3 {
		t.Errorf("cache disabled: %d connections, want 3", n)
	}
}

func TestDefaultCacheIsOneSecond(t *testing.T) {
	cfg := mustConfig(t, map[string]string{}, "")
	if cfg.cacheTTL != time.Second {
		t.Errorf("default cache TTL = %v, want 1s", cfg.cacheTTL)
	}
}

// ---------------------------------------------------------------------------
// Neo4j checks

func TestNeo4jUnreachable(t *testing.T) {
	port := strconv.Itoa(closedPort(t))
	cfg := mustConfig(t, map[string]string{
		"NEO4J_URI":            "neo4j://127.0.0.1:" + port,
		"NEO4J_PASSWORD":       "n3o-pa55word",
		"PROBE_CHECK_CACHE_MS": "0",
	}, "")
	start := time.Now()
	code, raw, hb := getHealth(t, newHandler(cfg))
	if el := time.Since(start); el > 4*time.Second {
		t.Errorf("unreachable check took %v, want ~<= 2s timeout", el)
	}
	if code != http.StatusServiceUnavailable || hb.Status != "unhealthy" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	nc := hb.Checks["neo4j"]
	if nc.OK || nc.Error == "" || nc.Target != "127.0.0.1:"+port {
		t.Errorf("neo4j check = %+v", nc)
	}
	if !strings.Contains(raw, "127.0.0.1:"+port) {
		t.Errorf("target not named in body: %s", raw)
	}
	if strings.Contains(raw, "n3o-pa55word") {
		t.Errorf("body contains password: %s", raw)
	}
}

func TestNeo4jFakeBolt(t *testing.T) {
	fb := startFakeBolt(t, "neo4j", "bolt-pa55")
	ok := mustConfig(t, map[string]string{
		"NEO4J_URI": fb.uri(), "NEO4J_PASSWORD": "bolt-pa55", "PROBE_CHECK_CACHE_MS": "0",
	}, "")
	code, raw, hb := getHealth(t, newHandler(ok))
	if code != 200 || !hb.Checks["neo4j"].OK {
		t.Fatalf("correct password: code=%d body=%s", code, raw)
	}
	if fb.hellos.Load() == 0 {
		t.Fatal("fake Bolt server saw no HELLO/LOGON")
	}

	bad := mustConfig(t, map[string]string{
		"NEO4J_URI": fb.uri(), "NEO4J_PASSWORD": "wrong-bolt-pw", "PROBE_CHECK_CACHE_MS": "0",
	}, "")
	code, raw, hb = getHealth(t, newHandler(bad))
	if code != http.StatusServiceUnavailable || hb.Checks["neo4j"].OK {
		t.Fatalf("wrong password: code=%d body=%s", code, raw)
	}
	if !strings.Contains(hb.Checks["neo4j"].Error, "nauthorized") {
		t.Errorf("expected an auth error, got %q", hb.Checks["neo4j"].Error)
	}
	if strings.Contains(raw, "wrong-bolt-pw") || strings.Contains(raw, "bolt-pa55") {
		t.Errorf("body contains password: %s", raw)
	}

	wrongUser := mustConfig(t, map[string]string{
		"NEO4J_URI": fb.uri(), "NEO4J_USER": "admin", "NEO4J_PASSWORD": "bolt-pa55", "PROBE_CHECK_CACHE_MS": "0",
	}, "")
	if code, raw, _ := getHealth(t, newHandler(wrongUser)); code != http.StatusServiceUnavailable {
		t.Errorf("wrong user: code=%d body=%s", code, raw)
	}
}

func TestBothChecksOneFailing(t *testing.T) {
	fr := startFakeRedis(t, "")
	env := redisEnv(fr.port(), "")
	env["NEO4J_URI"] = "bolt://127.0.0.1:" + strconv.Itoa(closedPort(t))
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, env, "")))
	if code != http.StatusServiceUnavailable || hb.Status != "unhealthy" {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	if !hb.Checks["redis"].OK || hb.Checks["neo4j"].OK {
		t.Errorf("checks = %+v", hb.Checks)
	}
}

func TestParseNeo4jURI(t *testing.T) {
	cases := []struct{ in, uri, target string }{
		{"bolt://db:7687", "bolt://db:7687", "db:7687"},
		{"neo4j://db", "bolt://db:7687", "db:7687"},
		{"neo4j+s://db.example:9999", "bolt+s://db.example:9999", "db.example:9999"},
		{"bolt://user:uri-secret@db:1234", "bolt://db:1234", "db:1234"},
	}
	for _, c := range cases {
		n, _, err := parseNeo4jURI(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if n.uri != c.uri || n.target != c.target {
			t.Errorf("%s: got uri=%s target=%s", c.in, n.uri, n.target)
		}
	}
	for _, bad := range []string{"http://db:7474", "bolt://", "bolt://db:notaport", "://x"} {
		if _, _, err := parseNeo4jURI(bad); err == nil {
			t.Errorf("%q: expected error", bad)
		}
	}
	// A password embedded in the URI is redacted in errors too.
	_, err := loadConfig(envMap(map[string]string{"NEO4J_URI": "http://u:uri-s3cret@db"}), "v", "")
	if err == nil || strings.Contains(err.Error(), "uri-s3cret") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	for _, env := range []map[string]string{
		{"PORT": "abc"}, {"PORT": "70000"}, {"PROBE_CHECK_CACHE_MS": "-5"},
		{"REDIS_HOST": "r", "REDIS_PORT": "x"},
	} {
		if _, err := loadConfig(envMap(env), "v", ""); err == nil {
			t.Errorf("%v: expected error", env)
		}
	}
	if _, err := loadConfig(envMap(nil), "v", "maybe"); err == nil {
		t.Error("forceUnhealthy=maybe: expected error")
	}
	cfg := mustConfig(t, map[string]string{"PORT": "8080", "REDIS_HOST": "redis"}, "")
	if cfg.port != 8080 || cfg.redis.target != "redis:6379" || cfg.neo4j != nil {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestStartupLogHasNoSecrets(t *testing.T) {
	cfg := mustConfig(t, map[string]string{
		"HELIX_SERVICE": "mcp-x", "PORT": "4000",
		"NEO4J_URI": "bolt://db", "NEO4J_PASSWORD": "neo-secret-1",
		"REDIS_HOST": "r", "REDIS_PASSWORD": "redis-secret-2",
	}, "")
	line := describe(cfg)
	for _, want := range []string{"service=mcp-x", "version=vtest", "port=4000", "db:7687", "r:6379"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q: %s", want, line)
		}
	}
	if strings.Contains(line, "neo-secret-1") || strings.Contains(line, "redis-secret-2") {
		t.Errorf("log line leaks a password: %s", line)
	}
}

// ---------------------------------------------------------------------------
// forced unhealthy

func TestForcedUnhealthy(t *testing.T) {
	fr := startFakeRedis(t, "")
	cfg := mustConfig(t, redisEnv(fr.port(), ""), "true")
	if !cfg.forced {
		t.Fatal("forceUnhealthy=true not parsed")
	}
	code, raw, hb := getHealth(t, newHandler(cfg))
	if code != http.StatusServiceUnavailable || hb.Status != "unhealthy" || hb.Error != forcedUnhealthyMsg {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	if fr.conns.Load() != 0 {
		t.Errorf("forced build should not probe dependencies")
	}
	// Default build value is not forced.
	if mustConfig(t, nil, forceUnhealthy).forced {
		t.Error("default build is forced unhealthy")
	}
}

// ---------------------------------------------------------------------------
// graceful shutdown (in-process)

func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	started := make(chan struct{}, 1)
	inner := newHandler(mustConfig(t, nil, ""))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/slow" {
			started <- struct{}{}
		}
		inner.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, h, 5*time.Second) }()

	type result struct {
		code int
		body string
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/api/slow?ms=600")
		if err != nil {
			resc <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		resc <- result{code: resp.StatusCode, body: string(b)}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("slow request never reached the handler")
	}
	shutdownAt := time.Now()
	cancel()

	// New connections are refused once shutdown has begun.
	time.Sleep(100 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after shutdown started")
	}

	res := <-resc
	if res.err != nil || res.code != 200 || res.body != "slept 600 ms\n" {
		t.Fatalf("in-flight request: %+v", res)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return")
	}
	if el := time.Since(shutdownAt); el < 400*time.Millisecond {
		t.Errorf("serve returned %v after shutdown; it did not wait for the in-flight request", el)
	}
}

func TestShutdownDeadlineExceeded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, newHandler(mustConfig(t, nil, "")), 100*time.Millisecond) }()
	go func() {
		resp, err := http.Get("http://" + addr + "/api/slow?ms=2000")
		if err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("serve = %v, want deadline exceeded", err)
	}
}

// ---------------------------------------------------------------------------
// end to end: the real binary with build-time flags and real signals

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	t.Skip("go tool not found")
	return ""
}

func buildProbe(t *testing.T, ldflags string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command(goTool(t), "build", "-trimpath", "-ldflags", ldflags, "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd    *exec.Cmd
	stdout *bytes.Buffer
	base   string
}

func startProbe(t *testing.T, bin string, env ...string) *proc {
	t.Helper()
	port := closedPort(t)
	var out bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = append([]string{"PORT=" + strconv.Itoa(port)}, env...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	p := &proc{cmd: cmd, stdout: &out, base: "http://127.0.0.1:" + strconv.Itoa(port)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(p.base + "/")
		if err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("probe did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Run("normal build, SIGTERM drains in-flight", func(t *testing.T) {
		bin := buildProbe(t, "-s -w -X main.version=v-e2e")
		p := startProbe(t, bin, "HELIX_SERVICE=mcp-e2e", "REDIS_HOST=127.0.0.1",
			"REDIS_PORT="+strconv.Itoa(closedPort(t)), "REDIS_PASSWORD=e2e-redis-secret")

		resp, err := http.Get(p.base + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "mcp-e2e v-e2e\n" {
			t.Errorf("GET / = %q", b)
		}
		resp, err = http.Get(p.base + "/api/health")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.Contains(string(b), `"version":"v-e2e"`) ||
			strings.Contains(string(b), "e2e-redis-secret") {
			t.Errorf("health = %d %s", resp.StatusCode, b)
		}

		resc := make(chan int, 1)
		go func() {
			resp, err := http.Get(p.base + "/api/slow?ms=800")
			if err != nil {
				resc <- -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			resc <- resp.StatusCode
		}()
		time.Sleep(200 * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := <-resc; code != 200 {
			t.Errorf("in-flight request during SIGTERM got %d", code)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, p.stdout.String())
		}
		logs := p.stdout.String()
		if n := strings.Count(logs, "probe starting"); n != 1 {
			t.Errorf("want exactly one start line, got %d:\n%s", n, logs)
		}
		for _, want := range []string{"service=mcp-e2e", "version=v-e2e", "port="} {
			if !strings.Contains(logs, want) {
				t.Errorf("start log lacks %q:\n%s", want, logs)
			}
		}
		if strings.Contains(logs, "e2e-redis-secret") {
			t.Errorf("logs leak password:\n%s", logs)
		}
	})
	t.Run("forced unhealthy build, SIGINT", func(t *testing.T) {
		bin := buildProbe(t, "-s -w -X main.version=v-bad -X main.forceUnhealthy=true")
		p := startProbe(t, bin)
		resp, err := http.Get(p.base + "/api/health")
		if err != nil {
			t.Fatal(err)
		}
		var hb healthBody
		err = json.NewDecoder(resp.Body).Decode(&hb)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 503 || hb.Status != "unhealthy" ||
			hb.Error != "forced unhealthy build" || hb.Version != "v-bad" {
			t.Errorf("health = %d %+v %v", resp.StatusCode, hb, err)
		}
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("exit after SIGINT: %v", err)
		}
	})
}

// A server that accepts TCP but never answers must fail both checks after
// the 2 s timeout (checks run in parallel, so ~2 s total).
func TestChecksTimeOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	env := redisEnv(port, "hang-pw")
	env["NEO4J_URI"] = "bolt://127.0.0.1:" + port
	start := time.Now()
	code, raw, hb := getHealth(t, newHandler(mustConfig(t, env, "")))
	el := time.Since(start)
	if code != http.StatusServiceUnavailable || hb.Checks["redis"].OK || hb.Checks["neo4j"].OK {
		t.Fatalf("code=%d body=%s", code, raw)
	}
	if el < 1500*time.Millisecond || el > 4*time.Second {
		t.Errorf("checks took %v, want about %v", el, checkTimeout)
	}
}
