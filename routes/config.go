// Package routes holds natsgate's configuration: the YAML schema, its
// validation, and the compiled route table the gateway serves from.
//
// The package is pure: it reads bytes it is given and never touches the
// network or the clock. Everything that can be checked or prepared before
// the first request is done here, once, so that the request path only looks
// things up: durations and sizes are parsed, subject templates compiled,
// defaults filled and every problem in a file reported together, each naming
// the file, the line, the route and the field.
package routes

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration file. Field comments give each default.
type Config struct {
	// NATS says how to reach NATS. Without a url natsgate starts an
	// embedded nats-server with JetStream.
	NATS NATSConfig `yaml:"nats"`
	// HTTP is the public listener that legacy callers reach.
	HTTP HTTPConfig `yaml:"http"`
	// Admin is the operator's listener: health, readiness, metrics, the
	// dashboard and the admin API. It defaults to loopback.
	Admin AdminConfig `yaml:"admin"`
	// Log sets the access and event log.
	Log LogConfig `yaml:"log"`
	// Fleet shares each replica's dashboard window with the others over
	// NATS, so /admin/stats can answer for every replica.
	Fleet FleetConfig `yaml:"fleet"`
	// Discovery reads the NATS micro services on the NATS system, to
	// report each route's responders and refuse a cutover nobody serves.
	Discovery DiscoveryConfig `yaml:"discovery"`
	// Defaults apply to every route that does not set its own value.
	Defaults Defaults `yaml:"defaults"`
	// Upstreams are the legacy HTTP services, by name, that routes proxy to.
	Upstreams map[string]UpstreamConfig `yaml:"upstreams"`
	// Routes map method and path to a NATS call or an upstream.
	Routes []RouteConfig `yaml:"routes"`

	src *source // where each field was written; set by Parse
}

// NATSConfig says how natsgate reaches NATS.
type NATSConfig struct {
	// URL of the NATS servers: comma separated, or a YAML list (read as
	// its items joined by commas), like [nats://a:4222, nats://b:4222].
	// Empty: the context's url (see context), else $NATS_URL, else an
	// embedded nats-server with JetStream is started (see embedded). The
	// start-up log line "NATS connected" says which it was (from: config,
	// context NAME, NATS_URL or embedded).
	URL string `yaml:"url"`
	// URLFrom says where URL came from, for the log: "config", "context
	// NAME", "NATS_URL", or "" for none (the embedded server). The loader
	// sets it; it is not written in the file.
	URLFrom string `yaml:"-"`
	// Context names a natscli context (nats context save NAME), read from
	// $XDG_CONFIG_HOME/nats/context/NAME.json, by default
	// ~/.config/nats/context/NAME.json: its url, user and password,
	// token, creds, nkey, TLS files (cert, key, ca) and inbox_prefix fill
	// what this section leaves unset (paths may start with ~ or hold
	// $VAR). Credentials count as a whole: if this section sets any of
	// user, password, token, nkey_seed_file or creds_file, the context's
	// credentials are not used; so are cert and key as a pair. A context
	// that sets something natsgate cannot honour (nsc, user_jwt,
	// user_seed, socks_proxy, jetstream_domain, jetstream_api_prefix,
	// tls_first, a creds URI other than file://) is a config error naming
	// the context file, line and field. Default: $NATS_CONTEXT, if set.
	// The context natscli has selected (context.txt, "nats context
	// select") is never used, so that what a server connects with does not
	// change with a command in some shell.
	Context string `yaml:"context"`
	// InboxPrefix replaces "_INBOX" in the reply subjects natsgate
	// subscribes to, for accounts whose permissions allow replies only
	// under a prefix of their own: subject tokens, no wildcards. Default
	// "_INBOX".
	InboxPrefix string `yaml:"inbox_prefix"`
	// Name is the connection name shown by the NATS server. Default "natsgate".
	Name string `yaml:"name"`
	// Embedded configures the in-process server used when no url is
	// found (see url).
	Embedded EmbeddedConfig `yaml:"embedded"`
	// User and Password authenticate with a user name and password.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Token authenticates with a token.
	Token string `yaml:"token"`
	// NKeySeedFile is a file holding an NKey seed (SU...).
	NKeySeedFile string `yaml:"nkey_seed_file"`
	// CredsFile is a .creds file (JWT and NKey seed).
	CredsFile string `yaml:"creds_file"`
	// TLS configures a TLS connection to NATS.
	TLS TLSConfig `yaml:"tls"`
	// ReconnectWait is the pause between reconnect attempts. Default 250ms.
	ReconnectWait Duration `yaml:"reconnect_wait"`
	// MaxReconnects bounds reconnect attempts; -1 tries forever. With a
	// bound, natsgate exits non-zero once the connection is closed, so
	// that a supervisor restarts it. Default -1 (forever).
	MaxReconnects *int `yaml:"max_reconnects"`
	// CutoverBucket is the JetStream key-value bucket that holds run-time
	// cutover overrides shared by every replica; operators may also use
	// the nats CLI on it (see docs/migration.md, "The cutover bucket").
	// Default "natsgate_cutover".
	CutoverBucket string `yaml:"cutover_bucket"`
	// Streams are JetStream streams natsgate creates (or updates) at start,
	// so that jetstream routes have somewhere to store. Optional: streams
	// may equally be managed outside natsgate.
	Streams []StreamConfig `yaml:"streams"`
}

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// Listen is where outside workers reach the embedded server. Port 0
	// picks a free port. Default 127.0.0.1:4222.
	Listen string `yaml:"listen"`
	// StoreDir is the JetStream store. Default: a directory under the
	// system temporary directory, removed at exit.
	StoreDir string `yaml:"store_dir"`
}

// TLSConfig is a TLS client configuration for NATS.
type TLSConfig struct {
	// CA is a PEM file of the authorities to trust.
	CA string `yaml:"ca"`
	// Cert and Key are a PEM client certificate and its key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// StreamConfig is a JetStream stream natsgate ensures exists at start.
type StreamConfig struct {
	// Name of the stream.
	Name string `yaml:"name"`
	// Subjects the stream stores.
	Subjects []string `yaml:"subjects"`
	// Replicas is how many servers hold the stream. Default 1.
	Replicas int `yaml:"replicas"`
	// DuplicateWindow is how long Nats-Msg-Id deduplication remembers an id.
	// Default 2m.
	DuplicateWindow Duration `yaml:"duplicate_window"`
}

// HTTPConfig is the public listener.
type HTTPConfig struct {
	// Listen address. Default 127.0.0.1:8080.
	Listen string `yaml:"listen"`
	// ReadHeaderTimeout closes a client that sends its headers too slowly.
	// Default 5s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// WriteTimeout cuts a client that takes no byte of its answer for this
	// long, so a client that never reads cannot hold an in-flight slot and
	// its answer for ever. It bounds each wait for the client, not the
	// whole answer: a long stream to a reading client is never cut.
	// Default 10s.
	WriteTimeout Duration `yaml:"write_timeout"`
	// MaxHeaderBytes bounds request headers; over it a client gets 431.
	// Default 64KiB.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// MaxInflight bounds requests being served at once; over it a request
	// gets 503 at once. Default 10000.
	MaxInflight int `yaml:"max_inflight"`
	// ShutdownGrace is how long in-flight requests may take to finish after
	// SIGTERM. Default 15s.
	ShutdownGrace Duration `yaml:"shutdown_grace"`
	// ShutdownDelay is how long natsgate keeps serving after SIGTERM with
	// /readyz already 503, so load balancers stop sending before the
	// listener closes. It counts against shutdown_grace. Default 0s.
	ShutdownDelay Duration `yaml:"shutdown_delay"`
	// TrustedProxies lists CIDRs or addresses whose X-Forwarded-For is
	// kept and extended, and whose X-Forwarded-Proto (http or https) and
	// X-Forwarded-Host, one plain value each, reach a legacy upstream as
	// sent; from any other peer all three are natsgate's own. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// TLS serves HTTPS (HTTP/2 and HTTP/1.1, by ALPN) instead of plain
	// HTTP. Default: none, plain HTTP/1.1.
	TLS *ListenerTLSConfig `yaml:"tls"`
	// H2C serves cleartext HTTP/2 (prior knowledge) beside HTTP/1.1, for a
	// listener behind a load balancer that terminates TLS. Not with tls.
	// Default false.
	H2C bool `yaml:"h2c"`
}

// ListenerTLSConfig is the certificate a listener serves. HTTP/2 and
// HTTP/1.1 are negotiated by ALPN. Both files are read again when they
// change (checked every 2 seconds) and on SIGHUP, with no connection
// dropped; a pair that does not load is logged and the old one keeps
// serving (see docs/operations.md, "HTTPS").
type ListenerTLSConfig struct {
	// CertFile is the PEM certificate, the leaf first; a chain may follow.
	// Required.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of the leaf. Required.
	KeyFile string `yaml:"key_file"`
	// MinVersion is the oldest TLS version accepted: "1.2" or "1.3".
	// Default "1.2".
	MinVersion string `yaml:"min_version"`
}

// AdminTLSConfig is the admin listener's TLS: a certificate, and
// optionally client certificates (mTLS) for everything or for changes.
type AdminTLSConfig struct {
	// CertFile, KeyFile and MinVersion are as in http.tls: the PEM
	// certificate (leaf first), its key, and the oldest TLS version.
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	MinVersion string `yaml:"min_version"`
	// ClientCAFile is a PEM file of the authorities whose client
	// certificates the admin listener accepts. Default: none, no client
	// certificates asked for.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is what needs a client certificate: "require" (every
	// connection; a client without one is refused at the handshake) or
	// "mutations" (anyone may read; PUT, POST, DELETE and PATCH need a
	// verified certificate, else a 403 problem), on top of admin.token.
	// Only with client_ca_file. Default "require".
	ClientAuth string `yaml:"client_auth"`
}

// AdminConfig is the operator's listener.
type AdminConfig struct {
	// Listen address. Default 127.0.0.1:9090.
	Listen string `yaml:"listen"`
	// Token enables admin mutations for callers that send
	// "Authorization: Bearer <token>". Without it the admin API is
	// read-only. Default: $NATSGATE_ADMIN_TOKEN.
	Token string `yaml:"token"`
	// TLS serves the admin listener over HTTPS (HTTP/2 and HTTP/1.1),
	// with client certificates when it names a client CA. Default: none.
	TLS *AdminTLSConfig `yaml:"tls"`
}

// FleetConfig is how natsgate replicas on one NATS system see each other.
// Each publishes its one-minute window every second on
// <subject_prefix>.stats.<replica_id> and listens to the others'.
type FleetConfig struct {
	// Enabled publishes this replica's dashboard window on NATS and
	// merges the other replicas' into /admin/stats. Off, /admin/stats is
	// this replica's alone. Default true.
	Enabled *bool `yaml:"enabled"`
	// ReplicaID names this replica to the others: one subject token (no
	// dots, wildcards or spaces). Default: the host name (dots made "_")
	// and the public listener's port, like "web-3:8080".
	ReplicaID string `yaml:"replica_id"`
	// SubjectPrefix is where replicas publish: subject tokens joined by
	// dots, no wildcards. Default "natsgate.fleet".
	SubjectPrefix string `yaml:"subject_prefix"`
	// LeaderTTL is how long the elected leader's claim lasts without a
	// renewal: the leader renews every third of it, and when it dies
	// another replica leads within two of them. At least 1s. Default 5s.
	LeaderTTL Duration `yaml:"leader_ttl"`
	// LeaderBucket is the JetStream key-value bucket the replicas elect
	// their leader in, created if missing; its keys expire after
	// fleet.leader_ttl. Default "natsgate_leader".
	LeaderBucket string `yaml:"leader_bucket"`
	// RolloutBucket is the JetStream key-value bucket that holds each
	// route's rollout state (its step, since when, its decisions), so that
	// a newly elected leader carries a plan on where the last one left it.
	// It must differ from fleet.leader_bucket, whose keys expire, and from
	// nats.cutover_bucket. Default "natsgate_rollouts".
	RolloutBucket string `yaml:"rollout_bucket"`
}

// DiscoveryConfig is how natsgate finds the workers that answer its
// routes. At start and every interval it asks every NATS micro service on
// the system for its info ($SRV.INFO, what "nats micro ls" shows) and
// matches each endpoint's subject against each route's. Plain subscribers
// that are not micro services cannot be seen this way, and natsgate never
// sends a worker a real request to find out.
type DiscoveryConfig struct {
	// Enabled runs discovery. Off, routes show no responders and a
	// cutover is never refused for want of them. Default true.
	Enabled *bool `yaml:"enabled"`
	// Interval between two looks; at least 1s. Default 30s.
	Interval Duration `yaml:"interval"`
}

// LogConfig sets the log.
type LogConfig struct {
	// Level: debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format: json or text (--log-format overrides it). Default json.
	Format string `yaml:"format"`
	// Access logs one line per request. Default true.
	Access *bool `yaml:"access"`
}

// Defaults apply to every route that leaves the field unset.
type Defaults struct {
	// Timeout of the NATS call. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// MaxBody bounds a request body; over it the client gets 413.
	// Default 1MiB.
	MaxBody ByteSize `yaml:"max_body"`
	// MaxSubject bounds a rendered subject; over it the client gets 414.
	// Default 256 bytes.
	MaxSubject ByteSize `yaml:"max_subject"`
	// ShadowMaxInflight bounds shadow copies in flight at once, over all
	// routes; over it a copy is dropped and counted. Default 100.
	ShadowMaxInflight int `yaml:"shadow_max_inflight"`
}

// UpstreamConfig is a legacy HTTP service.
type UpstreamConfig struct {
	// URL of the service: scheme, host and an optional path prefix,
	// http(s)://host:port[/prefix].
	URL string `yaml:"url"`
	// Timeout for the whole upstream exchange, body included: over it
	// before the answer's head, 504; during the body, the client's
	// connection is cut (a client too slow to take the body is cut by
	// http.write_timeout). For a Connection: Upgrade request it covers
	// getting the 101. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Breaker for the upstream: transport failures and timeouts only.
	// Default: 20 requests, 50% failing over 10s, open for 5s.
	Breaker *BreakerConfig `yaml:"breaker"`
	// TLS is how natsgate checks an https upstream and what it shows it.
	// Default: the system's roots, no client certificate.
	TLS *UpstreamTLSConfig `yaml:"tls"`
}

// UpstreamTLSConfig is the TLS client side of an https upstream.
type UpstreamTLSConfig struct {
	// CAFile is a PEM file of the authorities to trust instead of the
	// system's. Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// an upstream that asks for one. Both or neither. Default: none.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the upstream's certificate must carry (and
	// the SNI sent). Default: the URL's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any certificate the upstream shows. It is
	// logged as a warning at start. Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// RouteConfig is one route: a method and a path, answered over NATS, by an
// upstream, or both during a cutover.
type RouteConfig struct {
	// Name is unique; it labels metrics and names the route in every error.
	Name string `yaml:"name"`
	// Method is GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS; or "*" for
	// any method token, extension methods included (PURGE, PROPFIND,
	// REPORT, …), which reach the worker as sent. A route with one method
	// answers others with 405 and Allow. Default "*".
	Method string `yaml:"method"`
	// Path is a chi pattern: /users/{id}, /users/{id:[0-9]+}, /files/*.
	Path string `yaml:"path"`
	// NATS is the NATS side of the route.
	NATS *RouteNATS `yaml:"nats"`
	// MaxBody bounds the route's request body. Default: defaults.max_body.
	MaxBody ByteSize `yaml:"max_body"`
	// ForwardHeaders lists request headers copied onto the NATS message
	// beyond the protocol's own. Http-* and Nats-* may not be listed.
	// Default: none.
	ForwardHeaders []string `yaml:"forward_headers"`
	// Upstream names the legacy service that answers this route today.
	Upstream string `yaml:"upstream"`
	// Cutover is the stage: legacy, shadow, canary or nats (see
	// docs/migration.md, "Cutover"). Default nats without an upstream,
	// legacy with one.
	Cutover string `yaml:"cutover"`
	// CanaryPercent is the share sent to NATS with cutover canary. Default 0.
	CanaryPercent *int `yaml:"canary_percent"`
	// CanaryKey names a request header whose value pins a caller to one side.
	CanaryKey string `yaml:"canary_key"`
	// Fallback answers from the upstream when the NATS side fails before a
	// worker could have acted (and, for idempotent methods, on timeout);
	// see docs/migration.md, "Cutover". Default false.
	Fallback bool `yaml:"fallback"`
	// Breaker for the route's NATS side. Default: 20 requests, 50%
	// failing over 10s, open for 5s.
	Breaker *BreakerConfig `yaml:"breaker"`
	// ShadowUnsafe shadows methods other than GET and HEAD too. Default
	// false.
	ShadowUnsafe bool `yaml:"shadow_unsafe"`
	// ShadowIgnore lists JSON fields (dotted paths) left out of the shadow
	// comparison, like timestamps. Default: none.
	ShadowIgnore []string `yaml:"shadow_ignore"`
	// Rollout is a plan that moves the route from legacy to nats step by
	// step on the fleet's stats, run by the fleet's elected leader. It
	// needs an upstream, a nats section and the fleet (fleet.enabled).
	// Default: none; the stage moves only when an operator moves it.
	Rollout *RolloutConfig `yaml:"rollout"`
}

// RolloutConfig is a route's rollout plan: steps held in turn while the
// gates keep passing, and where to go when a gate fails.
type RolloutConfig struct {
	// Steps are held in order, 1 to 20 of them. Stages never go back
	// (shadow, then canary, then nats) and canary percents never fall.
	Steps []RolloutStepConfig `yaml:"steps"`
	// Gates are judged on the fleet's stats over their window during
	// every step. Default: every gate at its own default.
	Gates GatesConfig `yaml:"gates"`
	// OnFailure is where a failing gate sends the route: legacy, or
	// previous (the stage of the step before the failing one; legacy from
	// the first). Default legacy.
	OnFailure string `yaml:"on_failure"`
}

// RolloutStepConfig is one step of a plan: a stage held until its
// conditions are met. A step with neither until nor hold is done at the
// first passing verdict of the gates.
type RolloutStepConfig struct {
	// Stage is the step's stage: shadow, canary or nats; legacy is where
	// on_failure goes, not a step. Required.
	Stage string `yaml:"stage"`
	// Percent is the canary share sent to NATS, 1 to 100; required on a
	// canary step and refused on any other.
	Percent *int `yaml:"percent"`
	// Hold is the least time the step lasts. Default 0: none.
	Hold Duration `yaml:"hold"`
	// Until are counts the step must reach, since it began, over the
	// fleet. Default: none; when given, at least one of its fields.
	Until *UntilConfig `yaml:"until"`
}

// UntilConfig are a step's conditions on the route's traffic since the
// step began, counted over the fleet.
type UntilConfig struct {
	// Requests is how many requests the route must have answered, over
	// every backend; at least 1. Default: none.
	Requests *int `yaml:"requests"`
	// MatchRate is the least share of shadow comparisons that must have
	// matched, above 0 and at most 1; only on a shadow step. Default: none.
	MatchRate *float64 `yaml:"match_rate"`
}

// GatesConfig are the bounds a rollout must keep within during every step.
// Fewer than min_requests requests to a side in the window give no
// verdict: the step neither moves on nor rolls back.
type GatesConfig struct {
	// Window is how much of the fleet's history a verdict reads: a whole
	// multiple of 5s, from 5s to 15m. Default 1m.
	Window *Duration `yaml:"window"`
	// MinRequests is the least number of requests to each side in the
	// window for a verdict; at least 1. Default 100.
	MinRequests *int `yaml:"min_requests"`
	// MaxErrorRateDelta bounds the NATS side's share of 5xx answers minus
	// the legacy side's, 0 to 1. Default 0.01.
	MaxErrorRateDelta *float64 `yaml:"max_error_rate_delta"`
	// MaxP99Ratio bounds the NATS side's p99 edge latency over the legacy
	// side's; at least 1. Default 1.5.
	MaxP99Ratio *float64 `yaml:"max_p99_ratio"`
	// MinMatchRate is the least share of shadow comparisons that match,
	// judged while in shadow, 0 to 1. Default 0.99.
	MinMatchRate *float64 `yaml:"min_match_rate"`
}

// RouteNATS is the NATS side of a route.
type RouteNATS struct {
	// Subject is a template: tokens separated by dots, where {param} takes a
	// path parameter. No wildcards.
	Subject string `yaml:"subject"`
	// Pattern is the NATS call: request, publish or jetstream. Default
	// request.
	Pattern string `yaml:"pattern"`
	// Timeout of the route's NATS call. Default: defaults.timeout.
	Timeout Duration `yaml:"timeout"`
}

// BreakerConfig configures a circuit breaker. It opens on evidence: a
// share of failures over a rolling window that holds enough requests, so
// a few bad requests never open it for everyone. Which outcomes count as
// failures is fixed by natsgate (see docs/operations.md, "Failure model").
type BreakerConfig struct {
	// MinRequests is how many counted requests the window must hold before
	// the breaker may open. Default 20.
	MinRequests int `yaml:"min_requests"`
	// FailureRatio is the share of counted requests in the window that
	// must have failed for the breaker to open, above 0 and at most 1.
	// Default 0.5.
	FailureRatio float64 `yaml:"failure_ratio"`
	// Window is the rolling window the counts cover. Default 10s.
	Window Duration `yaml:"window"`
	// OpenFor is how long it stays open before letting a probe through.
	// Default 5s.
	OpenFor Duration `yaml:"open_for"`
	// Failures was the number of failures in a row that opened the
	// breaker. It is refused with a message naming its replacements.
	Failures int `yaml:"failures"`
}

// Duration is a time.Duration written as "250ms", "5s" or "1m".
type Duration time.Duration

// UnmarshalYAML reads a duration string. A bad value is reported as a type
// error so that decoding goes on and every problem is listed together.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || n.Kind != yaml.ScalarNode || v < 0 {
		return typeError(n, "%q is not a duration (write it like 250ms, 5s or 1m)", n.Value)
	}
	*d = Duration(v)
	return nil
}

// ByteSize is a size in bytes written as "512", "64KiB", "1MiB" or "1MB".
type ByteSize int64

// UnmarshalYAML reads a size string; see Duration.UnmarshalYAML.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseByteSize(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return typeError(n, "%q is not a size (write it like 512, 64KiB or 1MiB)", n.Value)
	}
	*b = ByteSize(v)
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseByteSize reads "512", "64KiB", "1MiB", "1MB" and the like.
func ParseByteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// typeError reports a bad scalar the way yaml reports its own type errors,
// so the loader finds the line and the field the same way for both. The
// values it quotes are clipped (see clip).
func typeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: "+format, append([]any{n.Line}, clipArgs(args)...)...)}}
}
