package routes

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// Pattern is how a route talks to NATS.
type Pattern string

// The NATS patterns a route can use.
const (
	// Request sends a request and answers with the worker's reply.
	Request Pattern = "request"
	// Publish publishes the body (at most once) and answers 202.
	Publish Pattern = "publish"
	// JetStream publishes to a stream and answers 202 once it is stored.
	JetStream Pattern = "jetstream"
)

// Stage is a route's place in the move from the legacy service to NATS.
type Stage string

// The cutover stages, in the order a migration moves through them.
const (
	// Legacy proxies every request to the upstream.
	Legacy Stage = "legacy"
	// Shadow lets the upstream answer and sends NATS a copy to compare.
	Shadow Stage = "shadow"
	// Canary sends a share of requests to NATS and the rest to the upstream.
	Canary Stage = "canary"
	// NATS answers every request over NATS.
	NATS Stage = "nats"
)

// ParseStage reads a stage name.
func ParseStage(s string) (Stage, error) {
	switch st := Stage(s); st {
	case Legacy, Shadow, Canary, NATS:
		return st, nil
	}
	return "", fmt.Errorf("unknown cutover stage %q (use legacy, shadow, canary or nats)", s)
}

// Defaults that apply when the file leaves a value out.
const (
	DefaultListen              = "127.0.0.1:8080"
	DefaultAdminListen         = "127.0.0.1:9090"
	DefaultEmbeddedListen      = "127.0.0.1:4222"
	DefaultTimeout             = 5 * time.Second
	DefaultMaxBody             = 1 << 20
	DefaultMaxSubject          = 256
	DefaultMaxHeaderBytes      = 64 << 10
	DefaultMaxInflight         = 10000
	DefaultReadHeaderTimeout   = 5 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultWriteTimeout        = 10 * time.Second
	DefaultShutdownGrace       = 15 * time.Second
	DefaultReconnectWait       = 250 * time.Millisecond
	DefaultBreakerMinRequests  = 20
	DefaultBreakerFailureRatio = 0.5
	DefaultBreakerWindow       = 10 * time.Second
	DefaultBreakerOpenFor      = 5 * time.Second
	DefaultCutoverBucket       = "natsgate_cutover"
	DefaultFleetSubjectPrefix  = "natsgate.fleet"
	DefaultFleetLeaderTTL      = 5 * time.Second
	DefaultFleetLeaderBucket   = "natsgate_leader"
	DefaultFleetRolloutBucket  = "natsgate_rollouts"
	DefaultDiscoveryInterval   = 30 * time.Second
)

// Table is a compiled configuration: every value checked, every default
// filled, every template parsed. The gateway serves from it and nothing on
// the request path parses again.
type Table struct {
	// File the table was read from.
	File string
	// Config is the file as read, with defaults filled in.
	Config Config
	// Routes in file order.
	Routes []*Route
	// Upstreams by name.
	Upstreams map[string]*Upstream
	// TrustedProxies parsed from http.trusted_proxies.
	TrustedProxies []*net.IPNet
	// Digest identifies the bytes the table was loaded from (SHA-256, in
	// hex; empty for a table compiled from a Config), so a file watcher can
	// tell a change from the file it started with.
	Digest string
}

// Digest is the digest Load gives a table of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Route returns the route of that name, or nil.
func (t *Table) Route(name string) *Route {
	for _, r := range t.Routes {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// Route is one compiled route.
type Route struct {
	Name   string
	Method string // upper case, or "*" for any method
	Path   string // the chi pattern
	// Source is where the route was written, "file:line".
	Source string
	// Params are the path's parameter names.
	Params []string

	// NATS side; Subject is nil for a route with only an upstream.
	Subject    *Subject
	Pattern    Pattern
	Timeout    time.Duration
	MaxBody    int64
	MaxSubject int
	// ForwardHeaders are extra request headers copied to NATS, canonical.
	ForwardHeaders []string

	// Legacy side; nil without an upstream.
	Upstream *Upstream

	// Cutover as configured. The gateway may override it at run time.
	Cutover       Stage
	CanaryPercent int
	CanaryKey     string // canonical header name, or ""
	Fallback      bool
	Breaker       Breaker
	ShadowUnsafe  bool
	// ShadowIgnore are JSON field paths left out of shadow comparisons,
	// each split on dots.
	ShadowIgnore [][]string
	// Rollout is the route's plan for moving to nats on evidence; nil
	// without one.
	Rollout *Rollout
}

// HasNATS reports whether the route has a NATS side.
func (r *Route) HasNATS() bool { return r.Subject != nil }

// CheckStage reports whether the route can run at a stage: every stage but
// nats needs an upstream, every stage but legacy a NATS side, and shadow
// compares answers, so it needs the request pattern.
func (r *Route) CheckStage(st Stage) error {
	if _, err := ParseStage(string(st)); err != nil {
		return err
	}
	if st != Legacy && r.Subject == nil {
		return fmt.Errorf("stage %s needs a nats section", st)
	}
	if st != NATS && r.Upstream == nil {
		return fmt.Errorf("stage %s needs an upstream", st)
	}
	if st == Shadow && r.Pattern != Request {
		return fmt.Errorf("shadow compares answers, so it needs nats.pattern request, not %s", r.Pattern)
	}
	return nil
}

// Upstream is a compiled legacy service.
type Upstream struct {
	Name    string
	URL     *url.URL
	Timeout time.Duration
	Breaker Breaker
	// TLS is the client side of an https upstream; nil: the defaults.
	TLS *UpstreamTLSConfig
}

// Breaker is a circuit breaker's settings: it opens when at least
// MinRequests counted requests in the last Window include a FailureRatio
// share of failures, and stays open for OpenFor.
type Breaker struct {
	MinRequests  int
	FailureRatio float64
	Window       time.Duration
	OpenFor      time.Duration
}

var (
	routeName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	paramName  = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	headerName = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")
	methods    = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"}
)

// Compile checks a parsed configuration and prepares it for serving. It
// reports every problem at once, each a *FieldError naming file, line, route
// and field, joined; all wrap ErrInvalidConfig.
func Compile(cfg *Config) (*Table, error) {
	src := cfg.src
	if src == nil {
		src = &source{file: "(config)", positions: map[string]position{}}
	}
	c := compiler{cfg: cfg, src: src}
	t := c.compile()
	if len(c.errs) > 0 {
		return nil, joinSorted(c.errs)
	}
	return t, nil
}

// Load parses and compiles in one step; see Parse and Compile. It reads
// no natscli context: LoadEnv does, given a reader.
func Load(file string, data []byte, lookupEnv func(string) (string, bool)) (*Table, error) {
	return LoadEnv(file, data, Env{Lookup: lookupEnv})
}

// Problem is a problem with a field of the table's file found after
// Compile, by a check that needs I/O (gateway.LoadConfig reads the TLS
// files): it names the file, the field's line and the route as every other
// problem does. path is the field's dotted path, as in "http.tls.cert_file"
// or "routes[2].upstream".
func (t *Table) Problem(path, format string, args ...any) *FieldError {
	src := t.Config.src
	if src == nil {
		src = &source{file: t.File, positions: map[string]position{}}
	}
	return src.fieldError(&t.Config, path, 0, fmt.Sprintf(format, clipArgs(args)...))
}

// JoinProblems joins problems into one report as Load does: in file order,
// the first MaxProblems listed and the rest counted.
func JoinProblems(errs ...error) error {
	var all []error
	for _, err := range errs {
		all = append(all, flatten(err)...)
	}
	if len(all) == 0 {
		return nil
	}
	return joinSorted(all)
}

type compiler struct {
	cfg  *Config
	src  *source
	errs []error
}

// fail records a problem. The values it quotes are clipped (see clip).
func (c *compiler) fail(path, format string, args ...any) {
	c.errs = append(c.errs, c.src.fieldError(c.cfg, path, 0, fmt.Sprintf(format, clipArgs(args)...)))
}

func (c *compiler) compile() *Table {
	cfg := *c.cfg
	t := &Table{File: c.src.file, Upstreams: map[string]*Upstream{}}

	c.fillDefaults(&cfg)
	c.checkListen("http.listen", cfg.HTTP.Listen)
	c.checkListen("admin.listen", cfg.Admin.Listen)
	if cfg.NATS.URL == "" {
		c.checkListen("nats.embedded.listen", cfg.NATS.Embedded.Listen)
	} else {
		for _, u := range strings.Split(cfg.NATS.URL, ",") {
			if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
				c.fail("nats.url", "%q is not a NATS URL (write it like nats://127.0.0.1:4222)", hideUserinfo(u))
			}
		}
	}
	if p := cfg.NATS.InboxPrefix; p != "" {
		if err := checkInboxPrefix(p); err != nil {
			c.fail("nats.inbox_prefix", "%v", err)
		}
	}
	if cfg.NATS.MaxReconnects != nil && *cfg.NATS.MaxReconnects < -1 {
		c.fail("nats.max_reconnects", "must be -1 (forever) or more, not %d", *cfg.NATS.MaxReconnects)
	}
	if (cfg.NATS.TLS.Cert == "") != (cfg.NATS.TLS.Key == "") {
		c.fail("nats.tls", "cert and key go together")
	}
	for i, s := range cfg.NATS.Streams {
		p := fmt.Sprintf("nats.streams[%d]", i)
		if s.Name == "" || strings.ContainsAny(s.Name, ".*> \t") {
			c.fail(p+".name", "a stream needs a name without dots, wildcards or spaces")
		}
		if len(s.Subjects) == 0 {
			c.fail(p+".subjects", "a stream needs at least one subject")
		}
		if s.Replicas < 0 || s.Replicas > 5 {
			c.fail(p+".replicas", "must be 1 to 5, not %d", s.Replicas)
		}
	}
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		c.fail("log.level", "unknown level %q (use debug, info, warn or error)", cfg.Log.Level)
	}
	switch cfg.Log.Format {
	case "json", "text":
	default:
		c.fail("log.format", "unknown format %q (use json or text)", cfg.Log.Format)
	}
	for i, cidr := range cfg.HTTP.TrustedProxies {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			if ip := net.ParseIP(cidr); ip != nil {
				n = &net.IPNet{IP: ip, Mask: net.CIDRMask(len(ip)*8, len(ip)*8)}
			} else {
				c.fail(fmt.Sprintf("http.trusted_proxies[%d]", i), "%q is not an address or CIDR", cidr)
				continue
			}
		}
		t.TrustedProxies = append(t.TrustedProxies, n)
	}
	if cfg.HTTP.ShutdownDelay >= cfg.HTTP.ShutdownGrace {
		c.fail("http.shutdown_delay", "%v must be shorter than http.shutdown_grace (%v)", time.Duration(cfg.HTTP.ShutdownDelay), time.Duration(cfg.HTTP.ShutdownGrace))
	}
	if cfg.HTTP.MaxInflight < 0 {
		c.fail("http.max_inflight", "must not be negative")
	}
	if l := cfg.HTTP.TLS; l != nil {
		c.listenerTLS("http.tls", l.CertFile, l.KeyFile, l.MinVersion)
		if cfg.HTTP.H2C {
			c.fail("http.h2c", "is cleartext HTTP/2, for a listener without tls; with http.tls, HTTP/2 is negotiated by ALPN")
		}
	}
	if a := cfg.Admin.TLS; a != nil {
		c.listenerTLS("admin.tls", a.CertFile, a.KeyFile, a.MinVersion)
		switch {
		case a.ClientCAFile == "" && a.ClientAuth != "":
			c.fail("admin.tls.client_auth", "needs admin.tls.client_ca_file, the authorities client certificates are checked against")
		case a.ClientCAFile == "":
		case a.ClientAuth != ClientAuthRequire && a.ClientAuth != ClientAuthMutations:
			c.fail("admin.tls.client_auth", "unknown value %q (use require or mutations)", a.ClientAuth)
		}
	}
	for _, tok := range strings.Split(cfg.Fleet.SubjectPrefix, ".") {
		if err := CheckToken(tok); err != nil {
			c.fail("fleet.subject_prefix", "%q is not a NATS subject without wildcards: %v", cfg.Fleet.SubjectPrefix, err)
			break
		}
	}
	if id := cfg.Fleet.ReplicaID; id != "" {
		if err := CheckToken(id); err != nil || len(id) > 128 {
			c.fail("fleet.replica_id", "%q must be one subject token of at most 128 bytes (no dots, wildcards or spaces)", id)
		}
	}

	if iv := time.Duration(cfg.Discovery.Interval); iv < time.Second {
		c.fail("discovery.interval", "%v must be at least 1s", iv)
	}
	if ttl := time.Duration(cfg.Fleet.LeaderTTL); ttl < time.Second {
		c.fail("fleet.leader_ttl", "%v must be at least 1s", ttl)
	}
	if b := cfg.Fleet.LeaderBucket; !validBucket(b) {
		c.fail("fleet.leader_bucket", "%q is not a key-value bucket name (letters, digits, - and _)", b)
	}
	// The rollout state needs a bucket of its own: the leader bucket's
	// keys expire, and the cutover bucket's keys are route names too.
	switch b := cfg.Fleet.RolloutBucket; {
	case !validBucket(b):
		c.fail("fleet.rollout_bucket", "%q is not a key-value bucket name (letters, digits, - and _)", b)
	case b == cfg.Fleet.LeaderBucket:
		c.fail("fleet.rollout_bucket", "%q is fleet.leader_bucket too, whose keys expire: give the rollout state a bucket of its own", b)
	case b == cfg.NATS.CutoverBucket:
		c.fail("fleet.rollout_bucket", "%q is nats.cutover_bucket too: give the rollout state a bucket of its own", b)
	}

	for name, u := range cfg.Upstreams {
		if up := c.upstream(name, u); up != nil {
			t.Upstreams[name] = up
		}
	}

	names := map[string]int{}
	patterns := map[string]string{}
	mux := chi.NewRouter()
	for i, rc := range cfg.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if first, dup := names[rc.Name]; dup && rc.Name != "" {
			c.fail(p+".name", "duplicate route name %q (first at line %d)", rc.Name, c.src.lineOf(fmt.Sprintf("routes[%d].name", first)))
		} else {
			names[rc.Name] = i
		}
		r := c.route(i, rc, &cfg, t.Upstreams)
		if r == nil {
			continue
		}
		key := r.Method + " " + r.Path
		if other, dup := patterns[key]; dup {
			c.fail(p+".path", "%s %s is already served by route %q", r.Method, r.Path, other)
			continue
		}
		patterns[key] = r.Name
		if err := chiAccepts(mux, r); err != nil {
			c.fail(p+".path", "%v", err)
			continue
		}
		t.Routes = append(t.Routes, r)
	}
	if len(cfg.Routes) == 0 {
		c.fail("routes", "no routes: add at least one")
	}
	t.Config = cfg
	return t
}

func (c *compiler) fillDefaults(cfg *Config) {
	setDefault(&cfg.HTTP.Listen, DefaultListen)
	setDefault(&cfg.Admin.Listen, DefaultAdminListen)
	setDefault(&cfg.NATS.Embedded.Listen, DefaultEmbeddedListen)
	setDefault(&cfg.NATS.Name, "natsgate")
	setDefault(&cfg.NATS.CutoverBucket, DefaultCutoverBucket)
	setDefault(&cfg.NATS.ReconnectWait, Duration(DefaultReconnectWait))
	if cfg.NATS.MaxReconnects == nil {
		forever := -1
		cfg.NATS.MaxReconnects = &forever
	}
	cfg.NATS.Streams = slices.Clone(cfg.NATS.Streams)
	for i := range cfg.NATS.Streams {
		setDefault(&cfg.NATS.Streams[i].Replicas, 1)
		setDefault(&cfg.NATS.Streams[i].DuplicateWindow, Duration(2*time.Minute))
	}
	setDefault(&cfg.HTTP.ReadHeaderTimeout, Duration(DefaultReadHeaderTimeout))
	setDefault(&cfg.HTTP.IdleTimeout, Duration(DefaultIdleTimeout))
	setDefault(&cfg.HTTP.WriteTimeout, Duration(DefaultWriteTimeout))
	setDefault(&cfg.HTTP.ShutdownGrace, Duration(DefaultShutdownGrace))
	setDefault(&cfg.HTTP.MaxHeaderBytes, ByteSize(DefaultMaxHeaderBytes))
	setDefault(&cfg.HTTP.MaxInflight, DefaultMaxInflight)
	setDefault(&cfg.Fleet.SubjectPrefix, DefaultFleetSubjectPrefix)
	setDefault(&cfg.Fleet.LeaderTTL, Duration(DefaultFleetLeaderTTL))
	setDefault(&cfg.Fleet.LeaderBucket, DefaultFleetLeaderBucket)
	setDefault(&cfg.Fleet.RolloutBucket, DefaultFleetRolloutBucket)
	if cfg.Fleet.Enabled == nil {
		on := true
		cfg.Fleet.Enabled = &on
	}
	setDefault(&cfg.Discovery.Interval, Duration(DefaultDiscoveryInterval))
	if cfg.Discovery.Enabled == nil {
		on := true
		cfg.Discovery.Enabled = &on
	}
	setDefault(&cfg.Log.Level, "info")
	setDefault(&cfg.Log.Format, "json")
	if cfg.Log.Access == nil {
		on := true
		cfg.Log.Access = &on
	}
	setDefault(&cfg.Defaults.Timeout, Duration(DefaultTimeout))
	setDefault(&cfg.Defaults.MaxBody, ByteSize(DefaultMaxBody))
	setDefault(&cfg.Defaults.MaxSubject, ByteSize(DefaultMaxSubject))
	setDefault(&cfg.Defaults.ShadowMaxInflight, 100)
	// The tls sections are copied before their defaults are filled, so the
	// parsed Config is left as the file wrote it.
	if cfg.HTTP.TLS != nil {
		l := *cfg.HTTP.TLS
		setDefault(&l.MinVersion, TLS12)
		cfg.HTTP.TLS = &l
	}
	if cfg.Admin.TLS != nil {
		a := *cfg.Admin.TLS
		setDefault(&a.MinVersion, TLS12)
		if a.ClientCAFile != "" {
			setDefault(&a.ClientAuth, ClientAuthRequire)
		}
		cfg.Admin.TLS = &a
	}
}

// flatten undoes errors.Join, so two reports merge into one sorted list.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// validBucket is JetStream's rule for a key-value bucket name.
func validBucket(b string) bool {
	if b == "" || len(b) > 255 {
		return false
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// The admin listener's client certificate modes (admin.tls.client_auth).
const (
	// ClientAuthRequire refuses a connection without a certificate from
	// admin.tls.client_ca_file at the handshake.
	ClientAuthRequire = "require"
	// ClientAuthMutations checks a certificate when one is shown and lets
	// only requests over a verified one change anything.
	ClientAuthMutations = "mutations"
)

// TLS versions a listener may take as its oldest (tls.min_version).
const (
	TLS12 = "1.2"
	TLS13 = "1.3"
)

// listenerTLS checks a listener's tls section as far as it can without
// reading the files (gateway.LoadConfig reads them).
func (c *compiler) listenerTLS(path, certFile, keyFile, minVersion string) {
	if certFile == "" {
		c.fail(path+".cert_file", "is required: the PEM certificate (a chain may follow the leaf)")
	}
	if keyFile == "" {
		c.fail(path+".key_file", "is required: the PEM private key of the certificate")
	}
	if minVersion != TLS12 && minVersion != TLS13 {
		c.fail(path+".min_version", "%q is not a TLS version natsgate serves (use 1.2 or 1.3)", minVersion)
	}
}

func (c *compiler) checkListen(path, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		c.fail(path, "%q is not a host:port address", addr)
	}
}

func (c *compiler) upstream(name string, u UpstreamConfig) *Upstream {
	p := "upstreams." + name
	pu, err := url.Parse(u.URL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		c.fail(p+".url", "%q is not an http or https URL", u.URL)
		return nil
	}
	if pu.RawQuery != "" || pu.Fragment != "" {
		c.fail(p+".url", "an upstream URL takes no query or fragment")
		return nil
	}
	up := &Upstream{Name: name, URL: pu, Timeout: time.Duration(u.Timeout), Breaker: c.breaker(p+".breaker", u.Breaker)}
	if up.Timeout == 0 {
		up.Timeout = DefaultTimeout
	}
	if u.TLS != nil {
		tc := *u.TLS
		up.TLS = &tc
		if pu.Scheme != "https" {
			c.fail(p+".tls", "is for an https upstream; the url is %q", u.URL)
		}
		if (tc.CertFile == "") != (tc.KeyFile == "") {
			c.fail(p+".tls", "cert_file and key_file go together")
		}
	}
	return up
}

func (c *compiler) breaker(path string, b *BreakerConfig) Breaker {
	out := Breaker{MinRequests: DefaultBreakerMinRequests, FailureRatio: DefaultBreakerFailureRatio,
		Window: DefaultBreakerWindow, OpenFor: DefaultBreakerOpenFor}
	if b == nil {
		return out
	}
	if b.Failures != 0 {
		c.fail(path+".failures", "is no longer read: a breaker opens on a share of failures over a window; set min_requests and failure_ratio (defaults %d and %g)",
			DefaultBreakerMinRequests, DefaultBreakerFailureRatio)
	}
	switch {
	case b.MinRequests < 0:
		c.fail(path+".min_requests", "must be 1 or more, not %d", b.MinRequests)
	case b.MinRequests > 0:
		out.MinRequests = b.MinRequests
	}
	switch {
	case b.FailureRatio < 0 || b.FailureRatio > 1 || b.FailureRatio != b.FailureRatio:
		c.fail(path+".failure_ratio", "must be above 0 and at most 1, not %g", b.FailureRatio)
	case b.FailureRatio > 0:
		out.FailureRatio = b.FailureRatio
	}
	switch {
	case b.Window < 0:
		c.fail(path+".window", "must be positive, not %v", time.Duration(b.Window))
	case b.Window > 0 && time.Duration(b.Window) < 100*time.Millisecond:
		c.fail(path+".window", "must be at least 100ms, not %v", time.Duration(b.Window))
	case b.Window > 0:
		out.Window = time.Duration(b.Window)
	}
	switch {
	case b.OpenFor < 0:
		c.fail(path+".open_for", "must be positive, not %v", time.Duration(b.OpenFor))
	case b.OpenFor > 0:
		out.OpenFor = time.Duration(b.OpenFor)
	}
	return out
}

func (c *compiler) route(i int, rc RouteConfig, cfg *Config, upstreams map[string]*Upstream) *Route {
	p := fmt.Sprintf("routes[%d]", i)
	before := len(c.errs)
	r := &Route{
		Name:         rc.Name,
		Method:       strings.ToUpper(rc.Method),
		Path:         rc.Path,
		Source:       fmt.Sprintf("%s:%d", c.src.file, c.src.lineOf(p)),
		MaxBody:      int64(cfg.Defaults.MaxBody),
		MaxSubject:   int(cfg.Defaults.MaxSubject),
		Fallback:     rc.Fallback,
		ShadowUnsafe: rc.ShadowUnsafe,
		Breaker:      c.breaker(p+".breaker", rc.Breaker),
	}
	switch {
	case rc.Name == "":
		c.fail(p+".name", "every route needs a name")
	case !routeName.MatchString(rc.Name):
		c.fail(p+".name", "%q: use letters, digits, '-', '_' and '.'", rc.Name)
	}
	if r.Method == "" {
		r.Method = "*"
	}
	if !slices.Contains(methods, r.Method) {
		c.fail(p+".method", "unknown method %q (use %s)", rc.Method, strings.Join(methods, ", "))
	}
	if !strings.HasPrefix(rc.Path, "/") {
		c.fail(p+".path", "%q must start with /", rc.Path)
	}
	r.Params = pathParams(rc.Path)
	for _, name := range r.Params {
		// Each name becomes the NATS header Http-Param-<name>.
		if name != "*" && !paramName.MatchString(name) {
			c.fail(p+".path", "parameter name %q takes only letters, digits, '-' and '_' (it names the header Http-Param-<name>)", name)
		}
	}
	if rc.MaxBody > 0 {
		r.MaxBody = int64(rc.MaxBody)
	}

	if rc.NATS != nil {
		c.routeNATS(p, r, rc.NATS, cfg)
	}
	for j, h := range rc.ForwardHeaders {
		hp := fmt.Sprintf("%s.forward_headers[%d]", p, j)
		switch canon := textproto.CanonicalMIMEHeaderKey(h); {
		case !headerName.MatchString(h):
			c.fail(hp, "%q is not a header name", h)
		case strings.HasPrefix(canon, "Http-") || strings.HasPrefix(canon, "Nats-"):
			c.fail(hp, "%q is reserved: Http-* headers are the gateway's own and Nats-* are NATS control headers", h)
		default:
			r.ForwardHeaders = append(r.ForwardHeaders, canon)
		}
	}

	if rc.Upstream != "" {
		r.Upstream = upstreams[rc.Upstream]
		if r.Upstream == nil {
			if _, declared := cfg.Upstreams[rc.Upstream]; !declared {
				c.fail(p+".upstream", "no upstream named %q under upstreams", rc.Upstream)
			}
		}
	}
	c.routeCutover(p, r, rc)
	c.rollout(p, r, rc)
	if len(c.errs) > before {
		return nil
	}
	return r
}

func (c *compiler) routeNATS(p string, r *Route, n *RouteNATS, cfg *Config) {
	subj, err := ParseSubject(n.Subject)
	if err != nil {
		c.fail(p+".nats.subject", "%v", err)
	} else {
		r.Subject = subj
		for _, name := range subj.Params() {
			if !slices.Contains(r.Params, name) {
				c.fail(p+".nats.subject", "uses {%s} but the path %q has no such parameter", name, r.Path)
			}
		}
		if subj.IsLiteral() && len(subj.String()) > r.MaxSubject {
			c.fail(p+".nats.subject", "is longer than defaults.max_subject (%d bytes)", r.MaxSubject)
		}
	}
	r.Pattern = Pattern(n.Pattern)
	if r.Pattern == "" {
		r.Pattern = Request
	}
	switch r.Pattern {
	case Request, Publish, JetStream:
	default:
		c.fail(p+".nats.pattern", "unknown pattern %q (use request, publish or jetstream)", n.Pattern)
	}
	r.Timeout = time.Duration(n.Timeout)
	if r.Timeout == 0 {
		r.Timeout = time.Duration(cfg.Defaults.Timeout)
	}
}

func (c *compiler) routeCutover(p string, r *Route, rc RouteConfig) {
	hasNATS, hasUp := rc.NATS != nil, rc.Upstream != ""
	switch {
	case rc.Cutover != "":
		st, err := ParseStage(rc.Cutover)
		if err != nil {
			c.fail(p+".cutover", "%v", err)
			return
		}
		r.Cutover = st
	case hasUp:
		r.Cutover = Legacy
	default:
		r.Cutover = NATS
	}
	if !hasNATS && !hasUp {
		c.fail(p, "a route needs nats, an upstream, or both")
		return
	}
	sideFailed := (rc.NATS != nil && r.Subject == nil) || (rc.Upstream != "" && r.Upstream == nil)
	if err := r.CheckStage(r.Cutover); err != nil && !sideFailed {
		c.fail(p+".cutover", "%v", err)
	}
	if rc.Fallback && !hasUp {
		c.fail(p+".fallback", "fallback needs an upstream to fall back to")
	}
	if rc.CanaryPercent != nil {
		if *rc.CanaryPercent < 0 || *rc.CanaryPercent > 100 {
			c.fail(p+".canary_percent", "must be 0 to 100, not %d", *rc.CanaryPercent)
		}
		r.CanaryPercent = *rc.CanaryPercent
	}
	if rc.CanaryKey != "" {
		if !headerName.MatchString(rc.CanaryKey) {
			c.fail(p+".canary_key", "%q is not a header name", rc.CanaryKey)
		}
		r.CanaryKey = textproto.CanonicalMIMEHeaderKey(rc.CanaryKey)
	}
	for _, f := range rc.ShadowIgnore {
		r.ShadowIgnore = append(r.ShadowIgnore, strings.Split(f, "."))
	}
}

// stageOrder ranks the stages a rollout step may hold: a plan only moves
// up this order.
var stageOrder = map[Stage]int{Shadow: 1, Canary: 2, NATS: 3}

// rollout checks a route's plan and compiles it into r.Rollout, filling
// the gates' defaults. A plan moves a route between its upstream and its
// NATS side on the fleet's stats, so it needs both sides and the fleet.
func (c *compiler) rollout(p string, r *Route, rc RouteConfig) {
	pc := rc.Rollout
	if pc == nil {
		return
	}
	p += ".rollout"
	before := len(c.errs)
	if en := c.cfg.Fleet.Enabled; en != nil && !*en {
		c.fail(p, "needs the fleet, and fleet.enabled is false: a plan is judged on the fleet's stats by its elected leader")
	}
	// Stages are checked against the route's sides only when both were
	// written and compiled: a missing or broken side is reported once,
	// not again for every step.
	sides := true
	switch {
	case rc.NATS == nil && rc.Upstream == "":
		sides = false // routeCutover reports the route with neither
	case rc.NATS == nil:
		c.fail(p, "a rollout moves a route from its upstream to nats: the route needs a nats section")
		sides = false
	case rc.Upstream == "":
		c.fail(p, "a rollout moves a route from its upstream to nats: the route needs an upstream")
		sides = false
	case r.Subject == nil || r.Upstream == nil:
		sides = false
	}

	out := &Rollout{OnFailure: RollBackLegacy}
	switch n := len(pc.Steps); {
	case n == 0:
		c.fail(p+".steps", "a plan needs 1 to %d steps, not none", MaxRolloutSteps)
	case n > MaxRolloutSteps:
		c.fail(p+".steps", "a plan has at most %d steps, not %d", MaxRolloutSteps, n)
	}
	// prev is the last step whose stage (and percent) read well, to which
	// the next is compared.
	var prev *RolloutStep
	for i, sc := range pc.Steps {
		sp := fmt.Sprintf("%s.steps[%d]", p, i)
		step := RolloutStep{Stage: Stage(sc.Stage), Hold: time.Duration(sc.Hold)}
		stageOK := true
		switch step.Stage {
		case Shadow, Canary, NATS:
			if err := r.CheckStage(step.Stage); err != nil && sides {
				c.fail(sp+".stage", "%v", err)
			}
			if prev != nil && stageOrder[step.Stage] < stageOrder[prev.Stage] {
				c.fail(sp+".stage", "%s after %s goes backwards: a plan moves shadow, canary, nats", step.Stage, prev.Stage)
			}
		case Legacy:
			c.fail(sp+".stage", "legacy is not a step: a rollout moves toward nats; on_failure says where it goes back")
			stageOK = false
		case "":
			c.fail(sp+".stage", "every step needs a stage: shadow, canary or nats")
			stageOK = false
		default:
			c.fail(sp+".stage", "unknown stage %q (use shadow, canary or nats)", sc.Stage)
			stageOK = false
		}
		switch {
		case step.Stage == Canary && sc.Percent == nil:
			c.fail(sp+".percent", "a canary step needs a percent, 1 to 100")
			stageOK = false
		case step.Stage == Canary && (*sc.Percent < 1 || *sc.Percent > 100):
			c.fail(sp+".percent", "must be 1 to 100, not %d", *sc.Percent)
			stageOK = false
		case step.Stage == Canary:
			step.Percent = *sc.Percent
			if prev != nil && prev.Stage == Canary && step.Percent < prev.Percent {
				c.fail(sp+".percent", "%d after %d goes backwards: canary percents never fall", step.Percent, prev.Percent)
			}
		case sc.Percent != nil && stageOK:
			c.fail(sp+".percent", "only a canary step has a percent, not a %s step", step.Stage)
		}
		if step.Hold < 0 {
			c.fail(sp+".hold", "must not be negative, not %v", step.Hold)
		}
		if u := sc.Until; u != nil {
			step.Until = c.until(sp+".until", step.Stage, u)
		}
		out.Steps = append(out.Steps, step)
		if stageOK {
			prev = &out.Steps[len(out.Steps)-1]
		}
	}

	out.Gates = c.gates(p+".gates", pc.Gates)
	switch rb := RollBack(pc.OnFailure); rb {
	case "":
	case RollBackLegacy, RollBackPrevious:
		out.OnFailure = rb
	default:
		c.fail(p+".on_failure", "unknown %q (use legacy or previous)", pc.OnFailure)
	}
	if len(c.errs) == before {
		r.Rollout = out
	}
}

// until compiles a step's conditions.
func (c *compiler) until(p string, st Stage, u *UntilConfig) *Until {
	out := &Until{}
	if u.Requests == nil && u.MatchRate == nil {
		c.fail(p, "an empty until holds nothing: give requests, match_rate or both, or leave until out")
	}
	if n := u.Requests; n != nil {
		if *n < 1 {
			c.fail(p+".requests", "must be at least 1, not %d", *n)
		} else {
			out.Requests = uint64(*n)
		}
	}
	if m := u.MatchRate; m != nil {
		switch {
		case !(*m > 0 && *m <= 1):
			c.fail(p+".match_rate", "must be above 0 and at most 1, not %g", *m)
		case st != Shadow:
			c.fail(p+".match_rate", "only a shadow step compares answers, so only it has a match rate, not a %s step", st)
		default:
			out.MatchRate = *m
		}
	}
	return out
}

// gates compiles a plan's gates, each at its default when left out.
func (c *compiler) gates(p string, g GatesConfig) Gates {
	out := Gates{Window: DefaultGateWindow, MinRequests: DefaultGateMinRequests,
		MaxErrorRateDelta: DefaultGateMaxErrorRateDelta, MaxP99Ratio: DefaultGateMaxP99Ratio,
		MinMatchRate: DefaultGateMinMatchRate}
	if w := g.Window; w != nil {
		// The fleet history is kept in RolloutResolution slots, for
		// MaxGateWindow: a window reads whole slots of what is kept.
		if d := time.Duration(*w); d < RolloutResolution || d > MaxGateWindow || d%RolloutResolution != 0 {
			c.fail(p+".window", "%v must be a whole multiple of %v, from %v to %v", d, RolloutResolution, RolloutResolution, MaxGateWindow)
		} else {
			out.Window = d
		}
	}
	if n := g.MinRequests; n != nil {
		if *n < 1 {
			c.fail(p+".min_requests", "must be at least 1, not %d", *n)
		} else {
			out.MinRequests = uint64(*n)
		}
	}
	if v := g.MaxErrorRateDelta; v != nil {
		if !(*v >= 0 && *v <= 1) {
			c.fail(p+".max_error_rate_delta", "must be 0 to 1, not %g", *v)
		} else {
			out.MaxErrorRateDelta = *v
		}
	}
	if v := g.MaxP99Ratio; v != nil {
		if !(*v >= 1) || math.IsInf(*v, 1) {
			c.fail(p+".max_p99_ratio", "must be at least 1 (and finite), not %g", *v)
		} else {
			out.MaxP99Ratio = *v
		}
	}
	if v := g.MinMatchRate; v != nil {
		if !(*v >= 0 && *v <= 1) {
			c.fail(p+".min_match_rate", "must be 0 to 1, not %g", *v)
		} else {
			out.MinMatchRate = *v
		}
	}
	return out
}

// pathParams lists a chi pattern's parameter names, reading it as chi
// does: a {name:regexp} ends at the brace that balances its opening one,
// so a regexp may hold braces of its own ({id:[0-9]{3}}); a trailing *
// is the parameter "*".
func pathParams(pattern string) []string {
	var names []string
	for {
		open := strings.IndexByte(pattern, '{')
		if open < 0 {
			break
		}
		depth, end := 0, -1
		for i := open; i < len(pattern) && end < 0; i++ {
			switch pattern[i] {
			case '{':
				depth++
			case '}':
				if depth--; depth == 0 {
					end = i
				}
			}
		}
		if end < 0 {
			break // unbalanced: chiAccepts reports it
		}
		name, _, _ := strings.Cut(pattern[open+1:end], ":")
		names = append(names, name)
		pattern = pattern[end+1:]
	}
	if strings.HasSuffix(pattern, "*") {
		names = append(names, "*")
	}
	return names
}

// chiAccepts registers the route's pattern on a scratch router: chi panics
// on patterns it cannot route, and this turns that into an error at load.
func chiAccepts(mux chi.Router, r *Route) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("chi cannot route %q: %v", r.Path, p)
		}
	}()
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if r.Method == "*" {
		mux.Handle(r.Path, noop)
	} else {
		mux.Method(r.Method, r.Path, noop)
	}
	return nil
}

// Format renders the table as the text `natsgate routes` prints: one line
// a route, ending in a note of its rollout plan's steps when it has one.
func (t *Table) Format(stage func(*Route) Stage) string {
	return t.FormatWith(stage, nil)
}

// FormatWith is Format with a RESPONDERS column after SUBJECT, filled by
// responders (what discovery found for the route, like "2" or "-"); nil
// leaves the column out.
func (t *Table) FormatWith(stage func(*Route) Stage, responders func(*Route) string) string {
	var b strings.Builder
	resp := func(r *Route) string {
		if responders == nil {
			return ""
		}
		return fmt.Sprintf("%-10s ", responders(r))
	}
	head := ""
	if responders != nil {
		head = fmt.Sprintf("%-10s ", "RESPONDERS")
	}
	fmt.Fprintf(&b, "%-20s %-7s %-28s %-8s %-10s %-30s %s%s\n", "ROUTE", "METHOD", "PATH", "STAGE", "PATTERN", "SUBJECT", head, "UPSTREAM")
	for _, r := range t.Routes {
		st := r.Cutover
		if stage != nil {
			st = stage(r)
		}
		subj, pat, up := "-", "-", "-"
		if r.Subject != nil {
			subj, pat = r.Subject.String(), string(r.Pattern)
		}
		if r.Upstream != nil {
			up = r.Upstream.Name + " (" + r.Upstream.URL.String() + ")"
		}
		// A plan may move the stage shown at any time, so the line says
		// the route has one.
		plan := ""
		if r.Rollout != nil {
			plan = fmt.Sprintf("  plan: %d steps", len(r.Rollout.Steps))
			if len(r.Rollout.Steps) == 1 {
				plan = "  plan: 1 step"
			}
		}
		fmt.Fprintf(&b, "%-20s %-7s %-28s %-8s %-10s %-30s %s%s%s\n", r.Name, r.Method, r.Path, st, pat, subj, resp(r), up, plan)
	}
	return b.String()
}
