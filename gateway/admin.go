package gateway

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TokenEnv names the environment variable that supplies the admin token
// when admin.token is not set.
const TokenEnv = "NATSGATE_ADMIN_TOKEN"

// AdminHandler serves the admin listener: /healthz, /readyz, /metrics, the
// admin API under /admin, and the dashboard at / with its data at
// /admin/stats.
func (s *Server) AdminHandler() http.Handler {
	mux := chi.NewRouter()
	mux.Get("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Get("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := s.Ready()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: s.reg}))
	mux.Get("/admin/routes", s.listRoutes)
	mux.Get("/admin/discovered", s.listDiscovered)
	mux.Get("/admin/fleet", s.getFleet)
	mux.Get("/admin/history", s.getHistory)
	mux.Get("/admin/report", s.getReport)
	mux.Get("/admin/routes/{name}/mismatches", s.listMismatches)
	mux.Put("/admin/routes/{name}/cutover", s.requireToken(s.putCutover))
	mux.Delete("/admin/routes/{name}/cutover", s.requireToken(s.deleteCutover))
	mux.Get("/admin/routes/{name}/rollout", s.getRollout)
	mux.Put("/admin/routes/{name}/rollout", s.requireToken(s.putRollout))
	s.mountDashboard(mux)
	mux.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, failure{status: http.StatusNotFound, kind: "not_found", detail: "no admin endpoint here"}, "", requestID(r))
	})
	return mux
}

// RouteStatus is one route as GET /admin/routes shows it.
type RouteStatus struct {
	Name                string            `json:"name"`
	Method              string            `json:"method"`
	Path                string            `json:"path"`
	Source              string            `json:"source"`
	Stage               routes.Stage      `json:"stage"`
	CanaryPercent       int               `json:"canary_percent"`
	ConfigStage         routes.Stage      `json:"config_stage"`
	ConfigCanaryPercent int               `json:"config_canary_percent"`
	Overridden          bool              `json:"overridden"`
	Override            *Override         `json:"override,omitempty"`
	Pattern             string            `json:"pattern,omitempty"`
	Subject             string            `json:"subject,omitempty"`
	Upstream            string            `json:"upstream,omitempty"`
	Fallback            bool              `json:"fallback"`
	Breakers            map[string]string `json:"breakers"`
	// Responders are the micro services discovery found serving the
	// route at its last look; absent until a look completes, and for a
	// route without a NATS side.
	Responders *Responders `json:"responders,omitempty"`
}

// Routes returns every route's status, in config order.
func (s *Server) Routes() []RouteStatus {
	c := s.table.Load()
	out := make([]RouteStatus, 0, len(c.table.Routes))
	for _, rt := range c.table.Routes {
		out = append(out, s.routeStatus(c.handlers[rt.Name]))
	}
	return out
}

func (s *Server) routeStatus(h *routeHandler) RouteStatus {
	rt, st := h.rt, h.stage.Load()
	rs := RouteStatus{
		Name: rt.Name, Method: rt.Method, Path: rt.Path, Source: rt.Source,
		Stage: st.stage, CanaryPercent: st.percent,
		ConfigStage: rt.Cutover, ConfigCanaryPercent: rt.CanaryPercent,
		Overridden: st.override != nil, Override: st.override,
		Fallback: rt.Fallback, Breakers: map[string]string{},
	}
	if rt.HasNATS() {
		rs.Pattern, rs.Subject = string(rt.Pattern), rt.Subject.String()
		rs.Breakers["nats"] = h.nats.breaker.Load().state()
		rs.Responders = s.responders(rt.Name)
	}
	if rt.Upstream != nil {
		rs.Upstream = rt.Upstream.Name
		if up := s.upstreams[rt.Upstream.Name]; up != nil {
			rs.Breakers[rt.Upstream.Name] = up.breaker.state()
		}
	}
	return rs
}

func (s *Server) listRoutes(w http.ResponseWriter, r *http.Request) {
	s.upstreamMu.Lock()
	list := s.Routes()
	s.upstreamMu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"routes":           list,
		"cutover_writable": s.adminToken() != "" && s.cutovers.store() != nil,
	})
}

func (s *Server) listMismatches(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	if s.routeOr404(w, r, name) == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"route": name, "mismatches": s.Mismatches(name)})
}

// routeOr404 finds a route by name, or answers 404 and returns nil.
func (s *Server) routeOr404(w http.ResponseWriter, r *http.Request, name string) *routeHandler {
	h := s.table.Load().handlers[name]
	if h == nil {
		s.adminProblem(w, r, http.StatusNotFound, "unknown_route", name, "no route named "+name)
	}
	return h
}

// cutoverRequest is the body of PUT /admin/routes/{name}/cutover.
type cutoverRequest struct {
	Cutover       string `json:"cutover"`
	CanaryPercent *int   `json:"canary_percent"`
	// Force moves a request route to canary or nats although discovery
	// found no micro service serving it (see noResponders).
	Force bool `json:"force"`
}

// listDiscovered answers GET /admin/discovered: the micro endpoints that
// claim a route the config does not have, each with a route entry that
// would serve it.
func (s *Server) listDiscovered(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"kind": responderKind, "enabled": s.discovery != nil, "checked_at": nil, "claims": []DiscoveredClaim{}}
	if res := s.discovery.result(); res != nil {
		out["checked_at"], out["claims"] = res.at, res.claims
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putCutover(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	h := s.routeOr404(w, r, name)
	if h == nil {
		return
	}
	var req cutoverRequest
	if err := decodeStrict(io.LimitReader(r.Body, 4096), &req); err != nil {
		s.adminProblem(w, r, http.StatusBadRequest, "bad_request", name, "body: want {\"cutover\": \"legacy|shadow|canary|nats\", \"canary_percent\": 0-100}: "+err.Error())
		return
	}
	// The same rule as for values read from the bucket (checkOverride).
	o, err := checkOverride(h.rt, req.Cutover, req.CanaryPercent)
	if err != nil {
		s.adminProblem(w, r, http.StatusBadRequest, "bad_field", name, err.Error())
		return
	}
	stage, percent := o.Cutover, o.CanaryPercent
	// A move towards NATS needs someone to answer there; force is
	// audited only when it overrode a refusal.
	forced := false
	if stage == routes.Canary || stage == routes.NATS {
		why, refuse := s.noResponders(r.Context(), h.rt)
		if refuse && !req.Force {
			s.adminProblem(w, r, http.StatusConflict, "no_responders", name, why)
			return
		}
		forced = refuse
	}
	old := h.stage.Load()
	o.By, o.At = actor(r), time.Now().UTC()
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.putOverride(ctx, name, o); err != nil {
		s.adminProblem(w, r, http.StatusServiceUnavailable, "cutover_store", name, err.Error())
		return
	}
	s.log.Info("audit: cutover override set", "route", name, "by", o.By, "at", o.At,
		"old_stage", old.stage, "old_percent", old.percent, "stage", stage, "percent", percent, "forced", forced)
	s.upstreamMu.Lock()
	defer s.upstreamMu.Unlock()
	writeJSON(w, http.StatusOK, s.routeStatus(h))
}

func (s *Server) deleteCutover(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	h := s.routeOr404(w, r, name)
	if h == nil {
		return
	}
	old := h.stage.Load()
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.deleteOverride(ctx, name); err != nil {
		s.adminProblem(w, r, http.StatusServiceUnavailable, "cutover_store", name, err.Error())
		return
	}
	s.log.Info("audit: cutover override removed", "route", name, "by", actor(r), "at", time.Now().UTC(),
		"old_stage", old.stage, "old_percent", old.percent, "stage", h.rt.Cutover, "percent", h.rt.CanaryPercent)
	s.upstreamMu.Lock()
	defer s.upstreamMu.Unlock()
	writeJSON(w, http.StatusOK, s.routeStatus(h))
}

// adminToken is admin.token, or the NATSGATE_ADMIN_TOKEN variable.
func (s *Server) adminToken() string {
	if s.cfg.Admin.Token != "" {
		return s.cfg.Admin.Token
	}
	return os.Getenv(TokenEnv)
}

// requireToken lets a mutation through only with the bearer token,
// compared in constant time. Without a configured token the admin API is
// read-only.
func (s *Server) requireToken(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := chi.URLParam(r, "name")
		want := s.adminToken()
		if want == "" {
			s.adminProblem(w, r, http.StatusForbidden, "read_only", name,
				"the admin API is read-only: set admin.token (or "+TokenEnv+") to allow changes")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="natsgate"`)
			s.adminProblem(w, r, http.StatusUnauthorized, "unauthorized", name, "a valid Authorization: Bearer token is required")
			return
		}
		next(w, r)
	}
}

func (s *Server) adminProblem(w http.ResponseWriter, r *http.Request, status int, kind, route, detail string) {
	if s.table.Load().handlers[route] == nil {
		route = ""
	}
	writeProblem(w, r, failure{status: status, kind: Kind(kind), detail: detail}, route, requestID(r))
}

// actor names who made an admin change, for the audit line: the
// X-Natsgate-Actor header when given, else the peer address.
func actor(r *http.Request) string {
	if a := r.Header.Get("X-Natsgate-Actor"); a != "" && validActor(a) {
		return a
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// validActor reports whether a names who made a change as the admin API
// stores it: at most 128 printable ASCII characters, spaces allowed.
func validActor(a string) bool {
	return len(a) <= 128 && (a == "" || validRequestID(strings.ReplaceAll(a, " ", "_")))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b, status = []byte(`{"error":"encoding failed"}`), http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
