package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// TestShadowMismatchNamesTheJSONPointer shows, on real servers, that a
// shadow mismatch between two JSON answers says where they differ: the
// JSON pointer of the differing field and both values, so an operator
// reading /admin/routes/{name}/mismatches need not diff the bodies by eye.
func TestShadowMismatchNamesTheJSONPointer(t *testing.T) {
	ns := natstest.RunServer(t)
	legacy := startLegacy(t)
	legacy.body = func(*http.Request) (int, string) {
		return 200, `{"id": 1, "a": {"b": [1, 2]}, "at": "legacy-time"}`
	}
	gw := startGateway(t, ns, cutoverConfig(legacy.URL, "shadow", ""))
	nc := natstest.Connect(t, ns)
	respond(t, nc, "users.*.get", func(*nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(`{"a":{"b":[7,2]},"id":1,"at":"worker-time"}`)}
	})

	if resp, body := do(t, "GET", gw.URL+"/users/1", nil, nil); resp.StatusCode != 200 || !strings.Contains(body, "legacy-time") {
		t.Fatalf("client answer: %d %q", resp.StatusCode, body)
	}
	var out struct{ Mismatches []Mismatch }
	natstest.Eventually(t, 15*time.Second, "one mismatch listed", func() bool {
		_, body := do(t, "GET", gw.AdminURL+"/admin/routes/get-user/mismatches", nil, nil)
		return json.Unmarshal([]byte(body), &out) == nil && len(out.Mismatches) == 1
	})
	want := "body: JSON differs at /a/b/0: legacy 1, nats 7"
	if got := out.Mismatches[0].Reason; got != want {
		t.Fatalf("reason = %q, want %q", got, want)
	}
}

// TestCompareAnswersNamesFirstDifferences covers the reasons a shadow
// comparison gives: JSON pointers (RFC 6901, "~" and "/" escaped) of the
// first differing fields in key order, both values quoted as JSON and
// clipped, a field one side lacks, and a count of the differences not
// listed.
func TestCompareAnswersNamesFirstDifferences(t *testing.T) {
	long := strings.Repeat("x", 100)
	cases := []struct {
		name         string
		legacy, nats string
		ignore       [][]string
		want         string
	}{
		{"same data", `{"a":1,"b":[1,2]}`, `{"b":[1,2],"a":1}`, nil, ""},
		{"ignored field", `{"a":1,"at":"x"}`, `{"a":1,"at":"y"}`, [][]string{{"at"}}, ""},
		{"nested array element", `{"a":{"b":[1,2]}}`, `{"a":{"b":[7,2]}}`, nil, `body: JSON differs at /a/b/0: legacy 1, nats 7`},
		{"missing on nats", `{"a":1,"b":2}`, `{"a":1}`, nil, `body: JSON differs at /b: legacy 2, nats absent`},
		{"missing on legacy", `{"a":1}`, `{"a":1,"c":"new"}`, nil, `body: JSON differs at /c: legacy absent, nats "new"`},
		{"type differs", `{"a":"1"}`, `{"a":1}`, nil, `body: JSON differs at /a: legacy "1", nats 1`},
		{"array length", `[1,2]`, `[1,2,3]`, nil, `body: JSON differs at /2: legacy absent, nats 3`},
		{"escaped pointer", `{"a/b":{"c~d":1}}`, `{"a/b":{"c~d":2}}`, nil, `body: JSON differs at /a~1b/c~0d: legacy 1, nats 2`},
		{"whole document", `1`, `2`, nil, `body: JSON differs at "": legacy 1, nats 2`},
		{"markup quoted as written", `{"h":"<b>"}`, `{"h":"<i>"}`, nil, `body: JSON differs at /h: legacy "<b>", nats "<i>"`},
		{"first three in key order, the rest counted", `{"e":1,"d":1,"c":1,"b":1,"a":1}`, `{"e":2,"d":2,"c":2,"b":2,"a":2}`, nil,
			`body: JSON differs at /a: legacy 1, nats 2; /b: legacy 1, nats 2; /c: legacy 1, nats 2; and 2 more`},
		{"long values clipped", `{"a":"` + long + `"}`, `{"a":"y"}`, nil,
			`body: JSON differs at /a: legacy "` + strings.Repeat("x", 47) + `…, nats "y"`},
		{"not JSON", `abc`, `abd`, nil, "body: bytes differ"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := compareAnswers(200, []byte(c.legacy), 200, []byte(c.nats), c.ignore); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
	if got := compareAnswers(200, nil, 404, nil, nil); got != "status: legacy 200, nats 404" {
		t.Fatalf("status reason: %q", got)
	}
}
