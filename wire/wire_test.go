package wire_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/internal/gatewaytest"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// startGateway serves yamlText with the real gateway until the test
// ends, and returns its base URL and metrics registry.
func startGateway(t *testing.T, ns *server.Server, yamlText string) (string, *prometheus.Registry) {
	t.Helper()
	gw := gatewaytest.Start(t, ns, yamlText)
	return gw.URL, gw.Registry
}

// get sends a GET and returns the response with its body read.
func get(t *testing.T, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// seen is what a worker read from one request through wire.Request.
type seen struct {
	Method, Path, RawQuery, Route, RequestID, Shop, Item, Missing string
	Query                                                         url.Values
	Shadow                                                        bool
}

func read(r wire.Request) seen {
	return seen{
		Method: r.Method(), Path: r.Path(), RawQuery: r.RawQuery(), Route: r.Route(), RequestID: r.RequestID(),
		Shop: r.Param("shop"), Item: r.Param("item-id"), Missing: r.Param("nope"),
		Query: r.Query(), Shadow: r.Shadow(),
	}
}

// wire.Request reads back every request header the real gateway sends:
// method, raw path, decoded parameters, query, route, request id, and no
// shadow flag on a request the client made.
func TestRequestReadsWhatTheGatewaySends(t *testing.T) {
	ns := natstest.RunServer(t)
	base, _ := startGateway(t, ns, `
routes:
  - name: get-item
    method: GET
    path: /shops/{shop}/items/{item-id}
    nats: {subject: "shops.{shop}.items", timeout: 2s}
`)
	nc := natstest.Connect(t, ns)
	got := make(chan seen, 4)
	sub, err := nc.Subscribe("shops.*.items", func(m *nats.Msg) {
		got <- read(wire.MsgRequest(m))
		_ = m.RespondMsg(wire.Reply{Body: []byte("ok")}.Msg())
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, target string
		want         seen
	}{
		{"plain", "/shops/s1/items/42", seen{Method: "GET", Path: "/shops/s1/items/42", Route: "get-item", Shop: "s1", Item: "42"}},
		{"escaped param and query", "/shops/s1/items/a%2Fb%C3%A9?q=x%20y&tag=1&tag=2",
			seen{Method: "GET", Path: "/shops/s1/items/a%2Fb%C3%A9", RawQuery: "q=x%20y&tag=1&tag=2", Route: "get-item",
				Shop: "s1", Item: "a/bé", Query: url.Values{"q": {"x y"}, "tag": {"1", "2"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+tc.target, http.Header{"X-Request-Id": {"req-" + strings.ReplaceAll(tc.name, " ", "-")}})
			if resp.StatusCode != 200 || body != "ok" {
				t.Fatalf("got %d %q, want 200 ok", resp.StatusCode, body)
			}
			var s seen
			select {
			case s = <-got:
			case <-time.After(15 * time.Second):
				t.Fatal("the worker saw no request")
			}
			tc.want.RequestID = resp.Header.Get("X-Request-Id")
			if tc.want.RequestID == "" {
				t.Fatal("the answer has no X-Request-Id")
			}
			if tc.want.Query == nil {
				tc.want.Query = url.Values{}
			}
			if fmt.Sprint(s) != fmt.Sprint(tc.want) {
				t.Errorf("the worker read\n %+v\nwant\n %+v", s, tc.want)
			}
		})
	}
}

// A shadow copy is the one request on which wire.Request.Shadow is true:
// the client's own request, answered by the legacy service, is not sent
// to the worker at all at the shadow stage, and its copy is marked.
func TestRequestShadowMarksOnlyTheCopy(t *testing.T) {
	legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "legacy")
	}))
	t.Cleanup(legacy.Close)
	for _, tc := range []struct {
		stage      string
		wantShadow bool
	}{{"shadow", true}, {"nats", false}} {
		t.Run(tc.stage, func(t *testing.T) {
			ns := natstest.RunServer(t)
			base, _ := startGateway(t, ns, fmt.Sprintf(`
upstreams:
  legacy: {url: %s, timeout: 2s}
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 2s}
    upstream: legacy
    cutover: %s
`, legacy.URL, tc.stage))
			nc := natstest.Connect(t, ns)
			got := make(chan wire.Request, 4)
			sub, err := nc.Subscribe("users.*.get", func(m *nats.Msg) {
				got <- wire.MsgRequest(m)
				_ = m.RespondMsg(wire.Reply{Body: []byte("legacy")}.Msg())
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			resp, body := get(t, base+"/users/7", nil)
			if resp.StatusCode != 200 || body != "legacy" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
			select {
			case r := <-got:
				if r.Shadow() != tc.wantShadow || r.Param("id") != "7" || r.Route() != "get-user" {
					t.Errorf("worker read shadow %v, id %q, route %q; want shadow %v, id 7, route get-user",
						r.Shadow(), r.Param("id"), r.Route(), tc.wantShadow)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the worker saw no request")
			}
		})
	}
}

// What the reply helpers write is what the real gateway reads: a micro
// endpoint's wire.Respond sets the status, passes its headers on and
// reports its worker time; SetError on a plain subscriber's reply gives a
// problem body with that status; a status the gateway refuses gives 502.
func TestReplyHelpersSetWhatTheGatewayReads(t *testing.T) {
	ns := natstest.RunServer(t)
	base, reg := startGateway(t, ns, `
routes:
  - name: create-thing
    method: GET
    path: /things/{id}
    nats: {subject: "things.{id}", timeout: 2s}
  - name: plain
    method: GET
    path: /plain/{case}
    nats: {subject: "plain.{case}", timeout: 2s}
`)
	nc := natstest.Connect(t, ns)
	const workerTime = 1234567 * time.Microsecond
	svc, err := micro.AddService(nc, micro.Config{Name: "wire-test", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	err = svc.AddEndpoint("things", micro.HandlerFunc(func(req micro.Request) {
		id := wire.MicroRequest(req).Param("id")
		_ = wire.Respond(req, wire.Reply{
			Status: 201,
			Header: nats.Header{"Content-Type": {"application/json"}, "Location": {"/things/" + id}},
			Body:   []byte(`{"id":"` + id + `"}`),
			// A start that far back makes the worker time known to the
			// millisecond's order, whatever the machine's speed.
			Start: time.Now().Add(-workerTime),
		})
	}), micro.WithEndpointSubject("things.*"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("plain.*", func(m *nats.Msg) {
		h := nats.Header{}
		switch wire.MsgRequest(m).Param("case") {
		case "missing":
			wire.SetError(h, 404, "no such thing")
		case "teapot":
			wire.SetStatus(h, 418)
			wire.SetWorkerTime(h, 2500*time.Microsecond)
		case "badstatus":
			wire.SetStatus(h, 99)
		}
		_ = m.RespondMsg(&nats.Msg{Header: h, Data: []byte("body")})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	t.Run("micro Respond", func(t *testing.T) {
		resp, body := get(t, base+"/things/9", nil)
		if resp.StatusCode != 201 || body != `{"id":"9"}` || resp.Header.Get("Location") != "/things/9" ||
			resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %q Location %q Content-Type %q, want 201 with the worker's body and headers",
				resp.StatusCode, body, resp.Header.Get("Location"), resp.Header.Get("Content-Type"))
		}
		ms := serverTiming(t, resp, "worker")
		if ms < 1234 || ms > 60_000 {
			t.Errorf("Server-Timing worker %vms, want at least the 1234.567ms the worker counted", ms)
		}
		if sum := workerSeconds(t, reg, "create-thing"); sum < 1.234 || sum > 60 {
			t.Errorf("natsgate_worker_duration_seconds sum %v, want about 1.234567", sum)
		}
	})
	for _, tc := range []struct {
		name       string
		wantStatus int
		wantBody   string // a substring
		wantWorker float64
		problem    bool
	}{
		{"missing", 404, `"detail":"no such thing"`, -1, true},
		{"teapot", 418, "body", 2.5, false},
		{"badstatus", 502, `"status":502`, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, base+"/plain/"+tc.name, nil)
			if resp.StatusCode != tc.wantStatus || !strings.Contains(body, tc.wantBody) {
				t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, body, tc.wantStatus, tc.wantBody)
			}
			if tc.problem {
				var p struct {
					Status    int    `json:"status"`
					Route     string `json:"route"`
					RequestID string `json:"request_id"`
				}
				if err := json.Unmarshal([]byte(body), &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" ||
					p.Status != tc.wantStatus || p.Route != "plain" || p.RequestID != resp.Header.Get("X-Request-Id") {
					t.Errorf("got %s %q, want a problem body with status %d naming the route and request id",
						resp.Header.Get("Content-Type"), body, tc.wantStatus)
				}
			}
			if tc.wantWorker >= 0 {
				if ms := serverTiming(t, resp, "worker"); ms != tc.wantWorker {
					t.Errorf("Server-Timing worker %vms, want %v", ms, tc.wantWorker)
				}
			}
		})
	}
}

// serverTiming is the duration, in milliseconds, of the named entry of the
// response's Server-Timing; the test fails when there is none.
func serverTiming(t *testing.T, resp *http.Response, name string) float64 {
	t.Helper()
	st := resp.Header.Get("Server-Timing")
	for entry := range strings.SplitSeq(st, ",") {
		var ms float64
		if n, _ := fmt.Sscanf(strings.TrimSpace(entry), name+";dur=%g", &ms); n == 1 {
			return ms
		}
	}
	t.Fatalf("Server-Timing %q has no %s entry", st, name)
	return math.NaN()
}

// workerSeconds is the sum of natsgate_worker_duration_seconds for route.
func workerSeconds(t *testing.T, reg *prometheus.Registry, route string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "natsgate_worker_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					return m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	t.Fatalf("no natsgate_worker_duration_seconds for route %s", route)
	return 0
}

// FormatWorkerTime writes milliseconds with microsecond precision, and
// never a negative time.
func TestFormatWorkerTime(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "worker;dur=0.000"},
		{999 * time.Nanosecond, "worker;dur=0.000"},
		{7 * time.Microsecond, "worker;dur=0.007"},
		{1500 * time.Microsecond, "worker;dur=1.500"},
		{1234567 * time.Microsecond, "worker;dur=1234.567"},
		{-time.Second, "worker;dur=0.000"},
	} {
		if got := wire.FormatWorkerTime(tc.d); got != tc.want {
			t.Errorf("FormatWorkerTime(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// A zero Request, or one over a nil message, reads as no headers at all
// rather than panicking: a worker may get messages not sent by natsgate.
func TestRequestWithoutHeaders(t *testing.T) {
	for _, r := range []wire.Request{{}, wire.MsgRequest(nil), wire.MsgRequest(&nats.Msg{}), wire.RequestOf(nil)} {
		if s := read(r); fmt.Sprint(s) != fmt.Sprint(seen{Query: url.Values{}}) {
			t.Errorf("read %+v, want nothing", s)
		}
	}
}
