package gateway

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"path"
	"time"

	"github.com/go-chi/chi/v5"
)

// web holds the dashboard: a page, a script and a style sheet, served as
// they are. No framework, no build step, nothing fetched from elsewhere.
//
//go:embed web
var web embed.FS

// dashboardFiles are the files the admin listener serves, by URL path.
var dashboardFiles = map[string]string{
	"/":              "web/index.html",
	"/dashboard.js":  "web/dashboard.js",
	"/dashboard.css": "web/dashboard.css",
}

// mountDashboard adds the dashboard page and GET /admin/stats to the admin
// router.
func (s *Server) mountDashboard(mux chi.Router) {
	for urlPath, file := range dashboardFiles {
		body, err := fs.ReadFile(web, file)
		if err != nil { // the files are embedded: only a broken build gets here
			panic(err)
		}
		ctype := map[string]string{
			".html": "text/html; charset=utf-8",
			".js":   "text/javascript; charset=utf-8",
			".css":  "text/css; charset=utf-8",
		}[path.Ext(file)]
		mux.Get(urlPath, func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", ctype)
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Content-Type-Options", "nosniff")
			// Only the page's own files and the admin API, same origin.
			h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
			_, _ = w.Write(body)
		})
	}
	mux.Get("/admin/stats", func(w http.ResponseWriter, r *http.Request) {
		var snap StatsSnapshot
		// The fleet's by default; with fleet.enabled false there is only
		// this replica, and "scope" says so.
		switch scope := r.URL.Query().Get("scope"); {
		case scope == "replica", s.fleet == nil && (scope == "" || scope == "fleet"):
			snap = s.Stats()
		case scope == "" || scope == "fleet":
			snap = s.fleetStats()
		default:
			s.adminProblem(w, r, http.StatusBadRequest, "bad_request", "", "scope: want fleet or replica, not "+clip(scope))
			return
		}
		b, err := json.Marshal(snap)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(b)
	})
}

// Stats is each served route's last minute on this replica: request and
// error rates, edge latency by backend, each hop's latency and shadow
// outcomes.
func (s *Server) Stats() StatsSnapshot {
	snap := s.statsSnapshot(nil)
	snap.Scope, snap.Replicas = "replica", 1
	return snap
}

// statsSnapshot reads every served route's window; merge, when not nil,
// adds other replicas' windows to each before it is rendered.
func (s *Server) statsSnapshot(merge func(name string, w *routeWindow)) StatsSnapshot {
	c := s.table.Load()
	t := c.table
	snap := StatsSnapshot{
		WindowSeconds: StatsWindow.Seconds(),
		Time:          s.stats.now().UTC().Truncate(time.Millisecond),
		NATSConnected: s.conn.nc.IsConnected(),
		AdminWritable: s.adminToken() != "" && s.cutovers.store() != nil, // a token, and a bucket to write to
		Routes:        make([]RouteStats, 0, len(t.Routes)),
	}
	keep := make(map[string]bool, len(t.Routes))
	for _, rt := range t.Routes {
		keep[rt.Name] = true
		w := s.stats.window(rt.Name)
		if merge != nil {
			merge(rt.Name, w)
		}
		rs := w.render(rt.Name)
		rs.Method, rs.Path, rs.Stage = rt.Method, rt.Path, appliedStage(c, rt)
		if rt.HasNATS() {
			rs.Pattern = string(rt.Pattern)
		}
		if rt.Upstream != nil {
			rs.Upstream = rt.Upstream.Name
		}
		snap.Routes = append(snap.Routes, rs)
	}
	s.stats.forget(keep)
	s.history.forget(keep)
	return snap
}
