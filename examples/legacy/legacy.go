// Package legacy is the demo's legacy REST service: the HTTP service that
// answers today, before its endpoints move to NATS workers. It answers
// GET /users/{id} with the same data as the sample worker, so a shadow
// comparison matches, and a few endpoints no worker has yet.
package legacy

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Handler serves the legacy API.
func Handler() http.Handler {
	mux := http.NewServeMux()
	users := func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		n, err := strconv.Atoi(id)
		if err != nil || n < 1 || n > 1000 {
			http.Error(w, "no such user", http.StatusNotFound)
			return
		}
		writeJSON(w, map[string]any{"id": n, "name": "user-" + id, "served_by": "legacy"})
	}
	mux.HandleFunc("GET /users/{id}", users)
	mux.HandleFunc("GET /profiles/{id}", users)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"service": "legacy-api", "version": "3.4.1"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]any{"service": "legacy-api", "method": r.Method, "path": r.URL.Path,
			"x_forwarded_for": r.Header.Get("X-Forwarded-For")})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
