package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
	"github.com/prometheus/client_golang/prometheus"
)

// seriesOf lists the exported series that carry route="name".
func seriesOf(t *testing.T, reg *prometheus.Registry, name string) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == name {
					out = append(out, mf.GetName()+" "+m.String())
				}
			}
		}
	}
	return out
}

// TestRemovedRouteSeriesStayGoneAfterInFlightRequest: a request still in
// flight on a route a reload removed finishes (answered, or timed out)
// after the reload, and the route's series do not come back: the route
// no longer exists, and a series recreated then would be exported for as
// long as the process runs.
func TestRemovedRouteSeriesStayGoneAfterInFlightRequest(t *testing.T) {
	const keep = `
  - name: keep
    method: GET
    path: /keep
    nats: {subject: atk.keep, timeout: 2s}
`
	const gone = `
  - name: gone
    method: GET
    path: /gone
    nats: {subject: atk.gone, timeout: 3s}
`
	tests := []struct {
		name   string
		answer bool // the worker answers once released; else the request times out
		want   int
	}{
		{"answered after the reload", true, http.StatusOK},
		{"timed out after the reload", false, http.StatusGatewayTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			gw := startGateway(t, ns, "routes:"+keep+gone)
			arrived, release := make(chan struct{}, 1), make(chan struct{})
			worker := natstest.Connect(t, ns)
			if _, err := worker.Subscribe("atk.gone", func(m *nats.Msg) {
				arrived <- struct{}{}
				<-release
				if tt.answer {
					_ = m.Respond([]byte("late"))
				}
			}); err != nil {
				t.Fatal(err)
			}
			if err := worker.Flush(); err != nil {
				t.Fatal(err)
			}
			done := make(chan int, 1)
			go func() {
				resp, err := http.Get(gw.URL + "/gone")
				if err != nil {
					done <- 0
					return
				}
				resp.Body.Close()
				done <- resp.StatusCode
			}()
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("the worker never got the request")
			}

			cfg, err := routes.Parse("test.yaml", []byte("routes:"+keep), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			cfg.NATS.URL, cfg.HTTP.Listen, cfg.Admin.Listen = ns.ClientURL(), "127.0.0.1:0", "127.0.0.1:0"
			off := false
			cfg.Discovery.Enabled = &off
			table, err := routes.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := gw.Reload(table); err != nil {
				t.Fatal(err)
			}
			if s := seriesOf(t, gw.Registry, "gone"); len(s) > 0 {
				t.Fatalf("series of the removed route right after the reload:\n%s", strings.Join(s, "\n"))
			}
			close(release)
			select {
			case code := <-done:
				if code != tt.want {
					t.Fatalf("in-flight request answered %d, want %d", code, tt.want)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the in-flight request never finished")
			}
			if s := seriesOf(t, gw.Registry, "gone"); len(s) > 0 {
				t.Errorf("series of the removed route after its last request:\n%s", strings.Join(s, "\n"))
			}
			if len(seriesOf(t, gw.Registry, "keep")) == 0 {
				t.Error("the kept route has no series")
			}
		})
	}
}
