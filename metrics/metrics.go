// Package metrics defines natsgate's Prometheus metrics and records them.
//
// The names and labels are part of the product: dashboards and alerts are
// written against them. Labels come only from bounded sets (route name,
// method, status code, backend, pattern, result, kind), never from a raw
// path or a rendered subject. Metrics register on a registry passed in, so
// tests and embedders each get their own.
package metrics

import (
	"github.com/natsgate/natsgate/internal/buildinfo"
	"github.com/prometheus/client_golang/prometheus"
)

// Backend label values: which side answered a request.
const (
	BackendNATS   = "nats"
	BackendLegacy = "legacy"
	// BackendNone is for requests answered by natsgate itself (404, 413, …).
	BackendNone = "none"
)

// NATS error kinds, the kind label of natsgate_nats_errors_total.
const (
	KindNoResponders = "no_responders"
	KindTimeout      = "timeout"
	KindDisconnected = "disconnected"
	KindPayload      = "payload"
	KindRefused      = "refused" // a stream refused the message: full, or out of storage
	KindOther        = "other"
)

// natsErrorKinds are every kind a NATS route's errors are counted by.
var natsErrorKinds = []string{KindNoResponders, KindTimeout, KindDisconnected, KindPayload, KindRefused, KindOther}

// Shadow comparison results, the result label of
// natsgate_shadow_comparisons_total.
const (
	ShadowMatch    = "match"
	ShadowMismatch = "mismatch"
	ShadowError    = "error"
	ShadowDropped  = "dropped"
)

// shadowResults are every result a shadow comparison has.
var shadowResults = []string{ShadowMatch, ShadowMismatch, ShadowError, ShadowDropped}

// Results of natsgate_config_reloads_total.
const (
	ReloadOK    = "ok"
	ReloadError = "error"
)

// Reasons of natsgate_rejected_requests_total.
const (
	RejectedInflightLimit = "inflight_limit"
)

// Buckets are latency buckets for NATS speeds: 50µs to 10s, three a decade
// (1, 2, 5) up to 10ms, coarser above.
var Buckets = []float64{
	50e-6, 100e-6, 200e-6, 500e-6,
	1e-3, 2e-3, 5e-3,
	10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10,
}

// nativeFactor makes each histogram a native histogram too, for servers that
// scrape those: buckets grow by at most 10% each.
const nativeFactor = 1.1

// Metrics holds every natsgate metric as a typed field.
type Metrics struct {
	Requests          *prometheus.CounterVec   // route, method, code, backend
	RequestDuration   *prometheus.HistogramVec // route, method, backend
	NATSDuration      *prometheus.HistogramVec // route, pattern
	WorkerDuration    *prometheus.HistogramVec // route
	UpstreamDuration  *prometheus.HistogramVec // route, upstream
	ShadowComparisons *prometheus.CounterVec   // route, result
	BreakerState      *prometheus.GaugeVec     // route, target
	NATSErrors        *prometheus.CounterVec   // route, kind
	UpstreamErrors    *prometheus.CounterVec   // route, upstream, kind
	Inflight          *prometheus.GaugeVec     // route
	NATSConnected     prometheus.Gauge
	CutoverStage      *prometheus.GaugeVec   // route, stage: 1 for the route's current stage
	ConfigReloads     *prometheus.CounterVec // result: ok, error
	Rejected          *prometheus.CounterVec // reason: inflight_limit, …
	LogDropped        prometheus.Counter     // log lines (access and event) the sink could not take in time
	FleetReplicas     prometheus.Gauge       // replicas whose stats /admin/stats merges, this one included
	FleetLeader       prometheus.Gauge       // 1 while this replica is the fleet's elected leader
	RolloutStep       *prometheus.GaugeVec   // route: the rollout's step, 1-based; 0 when none runs
	RolloutDecisions  *prometheus.CounterVec // route, decision
	RouteResponders   *prometheus.GaugeVec   // route: micro service instances discovery found serving it
	// TLSCertificateExpiry is the NotAfter of the certificate a listener
	// serves, as a Unix time in seconds (like probe_ssl_earliest_cert_expiry),
	// so an alert reads "natsgate_tls_certificate_expiry_seconds - time()".
	// Only listeners with tls have a series.
	TLSCertificateExpiry *prometheus.GaugeVec // listener: http, admin
	Routes               *prometheus.GaugeVec // stage: served routes at each cutover stage
	// BuildInfo is 1, labelled with the build: version, revision, goversion.
	BuildInfo *prometheus.GaugeVec
}

func histogram(name, help string, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:                            name,
		Help:                            help,
		Buckets:                         Buckets,
		NativeHistogramBucketFactor:     nativeFactor,
		NativeHistogramMaxBucketNumber:  160,
		NativeHistogramMinResetDuration: 0,
	}, labels)
}

// New creates natsgate's metrics and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_http_requests_total",
			Help: "HTTP requests answered, by route, method, status code and the backend that answered.",
		}, []string{"route", "method", "code", "backend"}),
		RequestDuration: histogram("natsgate_http_request_duration_seconds",
			"Edge latency: first byte in to last byte out, inside natsgate.", "route", "method", "backend"),
		NATSDuration: histogram("natsgate_nats_request_duration_seconds",
			"The NATS hop: request sent to reply received, or publish to server acknowledgement.", "route", "pattern"),
		WorkerDuration: histogram("natsgate_worker_duration_seconds",
			"The worker's own time, from its Server-Timing: worker;dur= reply header.", "route"),
		UpstreamDuration: histogram("natsgate_upstream_request_duration_seconds",
			"The legacy hop: request sent to the upstream to its response headers.", "route", "upstream"),
		ShadowComparisons: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_shadow_comparisons_total",
			Help: "Shadow outcomes: match, mismatch, error, or dropped when too many copies were in flight.",
		}, []string{"route", "result"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_breaker_state",
			Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open. target is nats or the upstream's name.",
		}, []string{"route", "target"}),
		NATSErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_nats_errors_total",
			Help: "NATS-side failures by kind: no_responders, timeout, disconnected, payload, refused, other.",
		}, []string{"route", "kind"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_upstream_errors_total",
			Help: "Legacy upstream failures by kind: timeout, error (unreachable, failed on the wire), body_cut (the answer broke off after its head was sent). A 5xx answer is not one.",
		}, []string{"route", "upstream", "kind"}),
		Inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_inflight_requests",
			Help: "Requests being served now.",
		}, []string{"route"}),
		NATSConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natsgate_nats_connected",
			Help: "1 while natsgate is connected to NATS.",
		}),
		CutoverStage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_cutover_stage",
			Help: "1 for each route's current cutover stage, 0 for the others.",
		}, []string{"route", "stage"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_config_reloads_total",
			Help: "Configuration reloads by result: ok or error.",
		}, []string{"result"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_rejected_requests_total",
			Help: "Requests turned away before routing, by reason.",
		}, []string{"reason"}),
		LogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "natsgate_log_dropped_total",
			Help: "Log lines, access and event alike, dropped because the log's sink could not keep up or refused them.",
		}),
		FleetReplicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natsgate_fleet_replicas",
			Help: "natsgate replicas heard on the fleet subject in the last 5s, this one included: the replicas /admin/stats merges.",
		}),
		FleetLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natsgate_fleet_leader",
			Help: "1 while this replica is the fleet's elected leader (it holds the fleet.leader_bucket key), 0 otherwise.",
		}),
		RolloutStep: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_rollout_step",
			Help: "The step a route's rollout plan is at, from 1, while it runs or is paused; 0 otherwise. Every replica reports the stored state.",
		}, []string{"route"}),
		RolloutDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsgate_rollout_decisions_total",
			Help: "Rollout decisions this replica made: start, advance, done, rollback, pause, resume, abort. Sum over replicas for the fleet's.",
		}, []string{"route", "decision"}),
		RouteResponders: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_route_responders",
			Help: "NATS micro service instances whose endpoint subject covers the route's, at discovery's last look. Plain subscribers are not seen; absent until a look completes.",
		}, []string{"route"}),
		TLSCertificateExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_tls_certificate_expiry_seconds",
			Help: "When the certificate a listener serves expires (its NotAfter), as a Unix time in seconds; updated when the certificate is re-read.",
		}, []string{"listener"}),
		Routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsgate_routes",
			Help: "Routes this replica serves at each cutover stage (legacy, shadow, canary, nats), run-time overrides included: a migration's progress at a glance.",
		}, []string{"stage"}),
	}
	m.SetRoutes(nil)
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "natsgate_build_info",
		Help: "1, labelled with the build: the main module's version, the VCS revision it was built from and the Go version.",
	}, []string{"version", "revision", "goversion"})
	m.BuildInfo.WithLabelValues(buildLabels()).Set(1)
	// Counters whose label values are known start at 0, so that a rate or a
	// share over them reads 0 before the first event rather than no data.
	for _, r := range []string{ReloadOK, ReloadError} {
		m.ConfigReloads.WithLabelValues(r)
	}
	m.Rejected.WithLabelValues(RejectedInflightLimit)
	reg.MustRegister(m.BuildInfo, m.Requests, m.RequestDuration, m.NATSDuration, m.WorkerDuration,
		m.UpstreamDuration, m.ShadowComparisons, m.BreakerState, m.NATSErrors, m.UpstreamErrors,
		m.Inflight, m.NATSConnected, m.CutoverStage, m.ConfigReloads, m.Rejected, m.LogDropped, m.FleetReplicas, m.FleetLeader,
		m.RolloutStep, m.RolloutDecisions, m.RouteResponders, m.TLSCertificateExpiry, m.Routes)
	return m
}

// buildLabels gives natsgate_build_info's labels from the binary's build
// information: the main module's version ("(devel)" for a build from a
// checkout), its vcs.revision ("unknown" when the build did not stamp one,
// as go test and go run do not) and the Go version.
func buildLabels() (version, revision, goversion string) {
	in := buildinfo.Read()
	return in.Version, in.Revision, in.GoVersion
}

// vec is what every *Vec of client_golang has: deleting children by labels.
type vec interface {
	DeletePartialMatch(labels prometheus.Labels) int
}

// routeVecs are the metrics labelled by route that DeleteRoute clears.
func (m *Metrics) routeVecs() []vec {
	return []vec{
		m.Requests, m.RequestDuration, m.NATSDuration, m.WorkerDuration, m.UpstreamDuration,
		m.ShadowComparisons, m.BreakerState, m.NATSErrors, m.UpstreamErrors, m.Inflight,
		m.CutoverStage, m.RolloutStep, m.RolloutDecisions, m.RouteResponders,
	}
}

// DeleteRoute removes every series of a route, for a reload that removed
// it: left in place, its last values would be exported for as long as
// the process runs, and a panel would show a route that no longer exists.
func (m *Metrics) DeleteRoute(name string) {
	for _, v := range m.routeVecs() {
		v.DeletePartialMatch(prometheus.Labels{"route": name})
	}
}
