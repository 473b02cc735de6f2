package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// fleetStats is the part of GET /admin/stats the fleet test reads.
type fleetStats struct {
	Scope    string `json:"scope"`
	Replicas int    `json:"replicas"`
	Routes   []struct {
		Name     string `json:"name"`
		Requests uint64 `json:"requests"`
	} `json:"routes"`
}

func readFleetStats(t testing.TB, g *gateway, query string) (fleetStats, error) {
	t.Helper()
	var s fleetStats
	e := do(newClient(t), "GET", g.AdminURL+"/admin/stats"+query, "", nil)
	if e.err != nil || e.status != 200 {
		return s, fmt.Errorf("/admin/stats%s: %v", query, e)
	}
	return s, json.Unmarshal([]byte(e.body), &s)
}

// Two natsgate processes on one nats-server, each with its default replica
// id (host name and port): replica B's /admin/stats includes the traffic
// sent only to replica A, and B's ?scope=replica does not.
func TestFleetReplicaSeesAnotherReplicasTraffic(t *testing.T) {
	ns := startNATS(t, natsOptions{})
	startWorker(t, ns.URL(), "w1", 0)
	body := `routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 5s}
`
	a := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: body})
	b := startGateway(t, gatewayConfig{NATSURL: ns.URL(), Body: body})
	client := newClient(t)
	const n = 25
	for i := range n {
		if e := do(client, "GET", fmt.Sprintf("%s/users/%d", a.URL, i+1), "", nil); e.status != 200 {
			t.Fatalf("GET /users/%d on A: %v", i+1, e)
		}
	}
	var last fleetStats
	eventually(t, 20*time.Second, "B's /admin/stats to include A's requests", func() bool {
		s, err := readFleetStats(t, b, "")
		if err != nil {
			t.Log(err)
			return false
		}
		last = s
		return s.Scope == "fleet" && s.Replicas == 2 && len(s.Routes) == 1 && s.Routes[0].Requests == n
	})
	own, err := readFleetStats(t, b, "?scope=replica")
	if err != nil {
		t.Fatal(err)
	}
	if own.Scope != "replica" || own.Replicas != 1 || own.Routes[0].Requests != 0 {
		t.Errorf("B ?scope=replica: %+v, want B alone with no requests (fleet view was %+v)", own, last)
	}
	eventually(t, 10*time.Second, "natsgate_fleet_replicas on B to be 2", func() bool {
		return scrape(t, client, b.AdminURL, "natsgate_fleet_replicas") == 2
	})
}
