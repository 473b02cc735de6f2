package gateway

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// forgedPeer is a stats message a hostile client sends as replica id:
// routes routes, named after it, each with one request in closed slot
// slot. Deflated, 2000 routes take about 11 KiB on the wire.
func forgedPeer(id string, routes int, slot int64) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":%q,"version":"v","config_hash":"h","seconds":30,"routes":[`, id)
	for i := range routes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"%s-%d","stage":"nats"}`, id, i)
	}
	fmt.Fprintf(&b, `],"slot":%d,"closed":[`, slot)
	for i := range routes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"%s-%d","stage":"nats","req":[1,0,0],"lat":{"edge_nats":[40,1]}}`, id, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// sendForged publishes forgedPeer for n replicas p00, p01, … and waits
// until gw has heard every one.
func sendForged(t *testing.T, gw *testGateway, n, routes int, slot int64) {
	t.Helper()
	waitFleetListening(t, gw) // each is sent once
	pub := natstest.Connect(t, gw.NS)
	for p := range n {
		id := fmt.Sprintf("p%02d", p)
		m := &nats.Msg{Subject: "natsgate.fleet.stats." + id, Header: nats.Header{fleetEncoding: {"deflate"}}, Data: deflated(t, forgedPeer(id, routes, slot))}
		if err := pub.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the forged replicas to be heard", func() bool {
		gw.fleet.mu.Lock()
		defer gw.fleet.mu.Unlock()
		return len(gw.fleet.peers) == n
	})
}

// The history keeps only the routes this replica serves: peers naming
// thousands of others (a hostile client, or replicas with another
// config) cost it no memory. Twenty forged peers of 2000 routes each, 220
// KiB on the wire, once held 40 000 routes (80 MiB) in one slot, and as
// much again in each of the 180 slots as the peers kept sending.
func TestHistoryKeepsOnlyServedRoutes(t *testing.T) {
	ns := natstest.RunServer(t)
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	slot := epochOf(time.Now()) - 1
	sendForged(t, b, 20, 2000, slot)
	b.history.mu.Lock()
	sl := b.history.slots[slot%int64(historySlots)]
	n := len(sl.routes)
	b.history.mu.Unlock()
	if sl.epoch != slot {
		t.Fatalf("slot %d not in the history (it holds %d): the forged peers were not heard", slot, sl.epoch)
	}
	if n > 1 {
		t.Errorf("slot %d holds %d routes, want at most the one served (get)", slot, n)
	}
}

// /admin/fleet answers in bounded time with many replicas naming many
// routes: twenty forged peers of 2000 distinct routes each once took
// seconds (drift looked each name up in a list of all of them).
func TestFleetStatusWithManyPeerRoutes(t *testing.T) {
	ns := natstest.RunServer(t)
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	sendForged(t, b, 20, 2000, epochOf(time.Now())-1)
	start := time.Now()
	st := getFleet(t, b)
	took := time.Since(start)
	t.Logf("/admin/fleet took %v", took)
	// About half a second with -race on an idle machine; the quadratic
	// drift took 15s. The bound leaves room for a loaded one.
	if took > 8*time.Second {
		t.Errorf("/admin/fleet took %v with 20 peers of 2000 routes, want well under 8s", took)
	}
	if len(st.Replicas) != 21 {
		t.Errorf("%d replicas listed, want b and 20 peers", len(st.Replicas))
	}
}

// allocated is the bytes the process allocates while fn runs (whatever
// else runs meanwhile included, so bounds must be generous).
func allocated(fn func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	fn()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// /admin/history costs memory in proportion to what it returns: a config
// of 200 routes once allocated 172 MiB per call (a fresh ten-KiB window
// for each of the 90 points of every route), every ten seconds for each
// open dashboard, and ?route= computed every route before keeping one.
func TestHistoryCallCostWithManyRoutes(t *testing.T) {
	ns := natstest.RunServer(t)
	var b strings.Builder
	b.WriteString("fleet: {replica_id: b}\nroutes:\n")
	for i := range 200 {
		fmt.Fprintf(&b, "  - {name: r%d, method: GET, path: /r%d, nats: {subject: r%d}}\n", i, i, i)
	}
	gw := startGateway(t, ns, b.String())
	for _, tc := range []struct {
		query string
		limit uint64
	}{
		{"", 32 << 20},
		{"?route=r5", 4 << 20},
	} {
		var size int64
		n := allocated(func() { // the client reads, and drops, the body
			resp, err := http.Get(gw.AdminURL + "/admin/history" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			size, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
		snap := getHistory(t, gw, tc.query)
		t.Logf("/admin/history%s: %d routes, %d KiB, %.1f MiB allocated", tc.query, len(snap.Routes), size>>10, float64(n)/(1<<20))
		if n > tc.limit {
			t.Errorf("/admin/history%s allocated %.1f MiB, want under %d MiB", tc.query, float64(n)/(1<<20), tc.limit>>20)
		}
	}
}
