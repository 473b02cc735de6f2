package gateway

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// An upstream may answer a request before it has read the request's body
// (an early 200, a 413 of its own): the proxy's transport then goes on
// sending the body, on a goroutine of its own, after the answer came
// back. The shadow copy of such a request must carry the body the client
// sent, whole, or not be made (a shadow error): never the part the
// transport had sent when the answer came, nor a buffer the transport is
// still writing into. An upstream that reads the body first gets every
// copy compared, whole.
func TestShadowCopyCarriesTheWholeBodyOrNone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early bool // the upstream answers before reading the body
	}{
		{"upstream reads the body first", false},
		{"upstream answers before reading the body", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.RunServer(t)
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !tc.early {
					b, _ := io.ReadAll(r.Body)
					if bodyHash(b) != r.Header.Get("X-Body-Hash") {
						w.WriteHeader(http.StatusBadRequest)
						return
					}
				}
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "got "+r.Header.Get(HeaderRequestID))
			}))
			t.Cleanup(up.Close)
			gw := startGateway(t, ns, fmt.Sprintf(`
defaults:
  shadow_max_inflight: 64
upstreams:
  legacy: {url: %s, timeout: 5s}
routes:
  - name: upload
    method: POST
    path: /upload
    max_body: 1MiB
    shadow_unsafe: true
    forward_headers: [X-Body-Hash]
    upstream: legacy
    cutover: shadow
    nats: {subject: upload, timeout: 5s}
`, up.URL))
			worker := natstest.Connect(t, ns)
			var mu sync.Mutex
			var partial []string
			respond(t, worker, "upload", func(m *nats.Msg) *nats.Msg {
				id := m.Header.Get(HeaderRequestID)
				if got := bodyHash(m.Data); got != m.Header.Get("X-Body-Hash") {
					mu.Lock()
					partial = append(partial, fmt.Sprintf("%s: %d bytes", id, len(m.Data)))
					mu.Unlock()
				}
				return &nats.Msg{Data: []byte("got " + id)}
			})
			const n = 8
			sent := 0
			for i := 0; i < n; i++ {
				// Past the 256 KiB net/http reads of a body its handler
				// left, so that an early answer leaves most of it unsent.
				body := bytes.Repeat([]byte{byte('a' + i)}, 900<<10)
				req, _ := http.NewRequest("POST", gw.URL+"/upload", bytes.NewReader(body))
				id := fmt.Sprintf("upload-%d", i)
				req.Header.Set(HeaderRequestID, id)
				req.Header.Set("X-Body-Hash", bodyHash(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					if tc.early {
						continue // the upstream's early close may reach the client
					}
					t.Fatalf("request %s: %v", id, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != "got "+id {
					t.Fatalf("request %s: %d %q", id, resp.StatusCode, got)
				}
				sent++
			}
			shadow := gw.metrics.ShadowComparisons
			count := func(result string) float64 { return testutil.ToFloat64(shadow.WithLabelValues("upload", result)) }
			natstest.Eventually(t, 10*time.Second, "an outcome for every copy", func() bool {
				return count("match")+count("mismatch")+count("error") >= float64(sent)
			})
			mu.Lock()
			defer mu.Unlock()
			if len(partial) > 0 {
				t.Errorf("shadow copies carried part of their request's body: %v", partial)
			}
			if m := count("mismatch"); m != 0 {
				t.Errorf("%v mismatches: %+v", m, gw.Mismatches("upload"))
			}
			if !tc.early && count("match") != float64(sent) {
				t.Errorf("%v of %d whole bodies matched (errors %v)", count("match"), sent, count("error"))
			}
		})
	}
}
