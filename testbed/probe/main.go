// Command probe is a tiny stand-in for Helix's own service images (dashboard
// and MCP servers) in helix-ops tests. It serves a health endpoint that
// performs real dependency checks (Neo4j via Bolt, Redis via RESP), a root
// endpoint for load-balancer tests and a slow endpoint for rollout tests, and
// shuts down gracefully on SIGTERM/SIGINT.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/neo4j/neo4j-go-driver/v5/neo4j"
)

// Set at build time with -ldflags "-X main.version=... -X main.forceUnhealthy=true".
var (
	version        = "dev"
	forceUnhealthy = "false"
)

const (
	defaultPort        = 3000
	defaultCacheTTL    = time.Second
	checkTimeout       = 2 * time.Second
	shutdownTimeout    = 10 * time.Second
	maxSlowMs          = 5000
	forcedUnhealthyMsg = "forced unhealthy build"
	redactedMarker     = "[REDACTED]"
)

// ---------------------------------------------------------------------------
// Configuration

type neo4jConfig struct {
	uri      string // driver URI without credentials, always a direct (bolt*) scheme
	target   string // host:port
	user     string
	password string
}

type redisConfig struct {
	target   string // host:port
	password string
}

type config struct {
	service  string
	version  string
	port     int
	forced   bool
	cacheTTL time.Duration
	timeout  time.Duration
	neo4j    *neo4jConfig // nil: not configured, check skipped
	redis    *redisConfig // nil: not configured, check skipped
	secrets  []string     // strings that must never appear in output
}

// loadConfig reads the environment. Errors never contain secret values.
func loadConfig(getenv func(string) string, buildVersion, buildForced string) (config, error) {
	cfg := config{
		service:  strings.TrimSpace(getenv("HELIX_SERVICE")),
		version:  buildVersion,
		port:     defaultPort,
		cacheTTL: defaultCacheTTL,
		timeout:  checkTimeout,
	}
	if cfg.service == "" {
		cfg.service = "probe"
	}
	if cfg.version == "" {
		cfg.version = "dev"
	}
	if buildForced != "" {
		forced, err := strconv.ParseBool(buildForced)
		if err != nil {
			return cfg, fmt.Errorf("invalid build flag main.forceUnhealthy=%q", buildForced)
		}
		cfg.forced = forced
	}
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return cfg, fmt.Errorf("invalid PORT %q", v)
		}
		cfg.port = p
	}
	if v := getenv("PROBE_CHECK_CACHE_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return cfg, fmt.Errorf("invalid PROBE_CHECK_CACHE_MS %q (want integer >= 0)", v)
		}
		cfg.cacheTTL = time.Duration(ms) * time.Millisecond
	}

	if raw := getenv("NEO4J_URI"); raw != "" {
		n, uriSecret, err := parseNeo4jURI(raw)
		if uriSecret != "" {
			cfg.secrets = append(cfg.secrets, uriSecret)
		}
		if err != nil {
			return cfg, err
		}
		n.user = getenv("NEO4J_USER")
		if n.user == "" {
			n.user = "neo4j"
		}
		n.password = getenv("NEO4J_PASSWORD")
		cfg.neo4j = n
		cfg.secrets = append(cfg.secrets, n.password)
	}

	if host := strings.TrimSpace(getenv("REDIS_HOST")); host != "" {
		port := "6379"
		if v := getenv("REDIS_PORT"); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				return cfg, fmt.Errorf("invalid REDIS_PORT %q", v)
			}
			port = strconv.Itoa(p)
		}
		cfg.redis = &redisConfig{
			target:   net.JoinHostPort(host, port),
			password: getenv("REDIS_PASSWORD"),
		}
		cfg.secrets = append(cfg.secrets, cfg.redis.password)
	}
	return cfg, nil
}

// parseNeo4jURI accepts bolt://, neo4j:// (and their +s / +ssc TLS variants).
// The check always connects directly to the given host (bolt scheme) so that
// a single server's advertised routing address cannot break the probe.
// It returns a password found in the URI's userinfo, if any, so the caller
// can redact it. The error never contains the URI itself.
func parseNeo4jURI(raw string) (*neo4jConfig, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error embeds the raw URI (which may hold credentials); don't use it.
		return nil, "", errors.New("invalid NEO4J_URI: not a valid URL")
	}
	var secret string
	if u.User != nil {
		secret, _ = u.User.Password()
	}
	var scheme string
	switch strings.ToLower(u.Scheme) {
	case "bolt", "neo4j":
		scheme = "bolt"
	case "bolt+s", "neo4j+s":
		scheme = "bolt+s"
	case "bolt+ssc", "neo4j+ssc":
		scheme = "bolt+ssc"
	default:
		return nil, secret, fmt.Errorf("invalid NEO4J_URI: unsupported scheme %q (want bolt:// or neo4j://)", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return nil, secret, errors.New("invalid NEO4J_URI: missing host")
	}
	port := u.Port()
	if port == "" {
		port = "7687"
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, secret, errors.New("invalid NEO4J_URI: bad port")
	}
	target := net.JoinHostPort(host, port)
	return &neo4jConfig{uri: scheme + "://" + target, target: target}, secret, nil
}

// redact removes every non-empty secret from s.
func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, redactedMarker)
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// Checks

type checkResult struct {
	OK     bool   `json:"ok"`
	Target string `json:"target"`
	Error  string `json:"error"`
}

type healthResponse struct {
	Status  string                 `json:"status"`
	Service string                 `json:"service"`
	Version string                 `json:"version"`
	Error   string                 `json:"error,omitempty"`
	Checks  map[string]checkResult `json:"checks"`
}

// checkRedis does AUTH (when a password is set) and PING over raw RESP.
func checkRedis(ctx context.Context, rc *redisConfig, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", rc.target)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	r := bufio.NewReaderSize(conn, 512)

	if rc.password != "" {
		cmd := fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(rc.password), rc.password)
		if _, err := io.WriteString(conn, cmd); err != nil {
			return fmt.Errorf("send AUTH: %w", err)
		}
		line, err := readRESPLine(r)
		if err != nil {
			return fmt.Errorf("read AUTH reply: %w", err)
		}
		if !strings.HasPrefix(line, "+") {
			return fmt.Errorf("AUTH rejected: %s", line)
		}
	}
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	line, err := readRESPLine(r)
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	if line != "+PONG" {
		return fmt.Errorf("unexpected PING reply: %s", line)
	}
	return nil
}

func readRESPLine(r *bufio.Reader) (string, error) {
	b, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("reply line too long")
		}
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// checkNeo4j opens a fresh driver (so every check does a real Bolt handshake
// plus HELLO/LOGON with basic auth) and verifies connectivity.
func checkNeo4j(ctx context.Context, nc *neo4jConfig, timeout time.Duration, userAgent string) error {
	driver, err := neo4j.NewDriverWithContext(nc.uri, neo4j.BasicAuth(nc.user, nc.password, ""),
		func(c *neo4j.Config) {
			c.SocketConnectTimeout = timeout
			c.ConnectionAcquisitionTimeout = timeout
			c.MaxConnectionPoolSize = 1
			c.TelemetryDisabled = true
			c.UserAgent = userAgent
		})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	defer func() {
		closeCtx, closeCancel := context.WithTimeout(context.Background(), timeout)
		defer closeCancel()
		_ = driver.Close(closeCtx)
	}()
	return driver.VerifyConnectivity(ctx)
}

// checker runs the configured checks and caches the combined result.
// The mutex is held while checking, so concurrent requests share one check
// instead of stampeding the databases.
type checker struct {
	cfg        config
	checkNeo4j func(context.Context, *neo4jConfig, time.Duration, string) error
	checkRedis func(context.Context, *redisConfig, time.Duration) error
	now        func() time.Time

	mu      sync.Mutex
	last    map[string]checkResult
	lastAt  time.Time
	hasLast bool
}

func newChecker(cfg config) *checker {
	return &checker{cfg: cfg, checkNeo4j: checkNeo4j, checkRedis: checkRedis, now: time.Now}
}

func (c *checker) results() map[string]checkResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hasLast && c.cfg.cacheTTL > 0 && c.now().Sub(c.lastAt) < c.cfg.cacheTTL {
		return c.last
	}
	res := c.run()
	c.last, c.lastAt, c.hasLast = res, c.now(), true
	return res
}

// run performs the checks concurrently. They are detached from any request
// context: a client hanging up must not poison the shared cached result.
func (c *checker) run() map[string]checkResult {
	base := context.Background()
	out := make(map[string]checkResult, 2)
	var mu sync.Mutex
	var wg sync.WaitGroup
	record := func(name, target string, err error) {
		r := checkResult{OK: err == nil, Target: target}
		if err != nil {
			r.Error = redact(err.Error(), c.cfg.secrets)
			if r.Error == "" {
				r.Error = "check failed"
			}
		}
		mu.Lock()
		out[name] = r
		mu.Unlock()
	}
	if nc := c.cfg.neo4j; nc != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record("neo4j", nc.target, c.checkNeo4j(base, nc, c.cfg.timeout, "helix-probe/"+c.cfg.version))
		}()
	}
	if rc := c.cfg.redis; rc != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			record("redis", rc.target, c.checkRedis(base, rc, c.cfg.timeout))
		}()
	}
	wg.Wait()
	return out
}

// ---------------------------------------------------------------------------
// HTTP

func (c *checker) health() (int, healthResponse) {
	resp := healthResponse{
		Status:  "ok",
		Service: c.cfg.service,
		Version: c.cfg.version,
		Checks:  map[string]checkResult{},
	}
	if c.cfg.forced {
		resp.Status = "unhealthy"
		resp.Error = forcedUnhealthyMsg
		return http.StatusServiceUnavailable, resp
	}
	for name, r := range c.results() {
		resp.Checks[name] = r
		if !r.OK {
			resp.Status = "unhealthy"
		}
	}
	if resp.Status != "ok" {
		return http.StatusServiceUnavailable, resp
	}
	return http.StatusOK, resp
}

func parseSlowMs(v string) (int, error) {
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.Atoi(v)
	if err != nil || ms < 0 {
		return 0, errors.New("ms must be a non-negative integer")
	}
	if ms > maxSlowMs {
		ms = maxSlowMs
	}
	return ms, nil
}

func newHandler(cfg config) http.Handler {
	ck := newChecker(cfg)
	return newHandlerWithChecker(ck)
}

func newHandlerWithChecker(ck *checker) http.Handler {
	cfg := ck.cfg
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s %s\n", cfg.service, cfg.version)
	})
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		code, body := ck.health()
		b, err := json.Marshal(body)
		if err != nil {
			http.Error(w, "encode error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_, _ = w.Write(append(b, '\n'))
	})
	mux.HandleFunc("GET /api/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := parseSlowMs(r.URL.Query().Get("ms"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done(): // client went away
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "slept %d ms\n", ms)
	})
	return mux
}

// serve runs the HTTP server on ln until ctx is cancelled, then shuts down
// gracefully: stops accepting and waits (up to timeout) for in-flight requests.
func serve(ctx context.Context, ln net.Listener, h http.Handler, timeout time.Duration) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err // Serve failed without a shutdown request
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func describe(cfg config) string {
	neo, red := "off", "off"
	if cfg.neo4j != nil {
		neo = cfg.neo4j.target + " user=" + cfg.neo4j.user
	}
	if cfg.redis != nil {
		red = cfg.redis.target
		if cfg.redis.password != "" {
			red += " auth=yes"
		}
	}
	return redact(fmt.Sprintf("probe starting service=%s version=%s port=%d neo4j=[%s] redis=[%s] cache=%s forced_unhealthy=%t",
		cfg.service, cfg.version, cfg.port, neo, red, cfg.cacheTTL, cfg.forced), cfg.secrets)
}

func main() {
	cfg, err := loadConfig(os.Getenv, version, forceUnhealthy)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe: "+redact(err.Error(), cfg.secrets))
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("0.0.0.0", strconv.Itoa(cfg.port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe: listen:", err)
		os.Exit(1)
	}
	fmt.Println(describe(cfg))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, ln, newHandler(cfg), shutdownTimeout); err != nil {
		fmt.Fprintln(os.Stderr, "probe: "+redact(err.Error(), cfg.secrets))
		os.Exit(1)
	}
	fmt.Println("probe stopped")
}
