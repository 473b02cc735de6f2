package importer

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

const specV1 = `openapi: 3.1.0
info: {title: Shop, version: "1"}
servers: [{url: "https://shop.example"}]
paths:
  /orders:
    get: {operationId: listOrders, summary: List orders, responses: {"200": {description: ok}}}
    post: {operationId: createOrder, responses: {"201": {description: ok}}}
  /orders/{id}:
    delete: {operationId: deleteOrder, responses: {"204": {description: ok}}}
`

// specV2 drops deleteOrder, adds getOrder and a path, and renames the
// parameter: /orders/{orderId} is still the route /orders/{id} to chi.
const specV2 = `openapi: 3.1.0
info: {title: Shop, version: "2"}
servers: [{url: "https://shop.example"}]
paths:
  /orders:
    get: {operationId: listOrders, summary: List orders, responses: {"200": {description: ok}}}
    post: {operationId: createOrder, responses: {"201": {description: ok}}}
  /orders/{orderId}:
    get: {operationId: getOrder, summary: One order, responses: {"200": {description: ok}}}
  /refunds:
    post: {operationId: listOrders, responses: {"201": {description: ok}}}
`

func mustImport(t *testing.T, spec string) []byte {
	t.Helper()
	res, err := Import([]byte(spec), "shop.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Config
}

func mustMerge(t *testing.T, existing []byte, spec string) *Result {
	t.Helper()
	res, err := Merge(existing, "natsgate.yaml", []byte(spec), "shop.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustValidate(t, "merged", res.Config)
	return res
}

// TestMergeKeepsEditsAddsNewListsGone edits an imported config by hand,
// then merges a newer description into it.
func TestMergeKeepsEditsAddsNewListsGone(t *testing.T) {
	cfg := string(mustImport(t, specV1))
	edited := strings.Replace(cfg, "  - name: listOrders\n    method: GET\n    path: /orders\n    nats:\n      subject: api.orders.get\n    upstream: legacy\n    cutover: legacy\n",
		"  - name: list-orders   # renamed by hand\n    method: GET\n    path: /orders\n    nats:\n      subject: orders.list\n      timeout: 2s\n    upstream: legacy\n    cutover: shadow\n    fallback: true\n", 1)
	edited = strings.Replace(edited, "routes:\n", "routes:\n  # a route of our own\n  - {name: health, method: GET, path: /healthz, upstream: legacy}\n", 1)
	if edited == cfg || !strings.Contains(edited, "cutover: shadow") {
		t.Fatal("the hand edit did not apply")
	}
	res := mustMerge(t, []byte(edited), specV2)
	out := string(res.Config)
	t.Logf("merged:\n%s", out)

	// Every existing line is still there, in order.
	rest := out
	for _, l := range strings.SplitAfter(edited, "\n") {
		i := strings.Index(rest, l)
		if i < 0 {
			t.Fatalf("existing line %q lost or moved", l)
		}
		rest = rest[i+len(l):]
	}
	tab := mustValidate(t, "merged", res.Config)
	var names []string
	for _, r := range tab.Routes {
		names = append(names, r.Name)
	}
	want := "health list-orders createOrder deleteOrder getOrder listOrders legacy-rest"
	if strings.Join(names, " ") != want {
		t.Errorf("routes %q, want %q", strings.Join(names, " "), want)
	}
	if r := tab.Route("list-orders"); r.Cutover != routes.Shadow || r.Subject.String() != "orders.list" || !r.Fallback {
		t.Errorf("hand edits lost: %+v", r)
	}
	if len(res.Routes) != 2 || res.Routes[0].Name != "getOrder" || res.Routes[1].Path != "/refunds" {
		t.Errorf("added %+v, want getOrder and POST /refunds", res.Routes)
	}
	if strings.Join(res.Gone, " ") != "health deleteOrder" {
		t.Errorf("gone %v, want health and deleteOrder", res.Gone)
	}
	if strings.Count(out, goneComment) != 2 || !strings.Contains(out, goneComment+"\n  - name: deleteOrder\n") {
		t.Errorf("gone routes are not marked above their dash:\n%s", out)
	}

	// Twice changes nothing.
	again := mustMerge(t, res.Config, specV2)
	if !bytes.Equal(again.Config, res.Config) {
		t.Errorf("second merge changed the file:\n%s", again.Config)
	}
	if len(again.Routes) != 0 || strings.Join(again.Gone, " ") != "health deleteOrder" {
		t.Errorf("second merge added %v, gone %v", again.Routes, again.Gone)
	}

	// deleteOrder's operation comes back: its mark goes away.
	specBack := strings.Replace(specV2, "  /refunds:\n", "    delete: {operationId: deleteOrder, responses: {\"204\": {description: ok}}}\n  /refunds:\n", 1)
	back := mustMerge(t, res.Config, specBack)
	if strings.Count(string(back.Config), goneComment) != 1 || strings.Join(back.Gone, " ") != "health" {
		t.Errorf("mark not taken away: gone %v\n%s", back.Gone, back.Config)
	}
}

// TestMergeOwnImportChangesNothing: merging a description into the config
// imported from it leaves the file as it is, for every real description.
func TestMergeOwnImportChangesNothing(t *testing.T) {
	for _, f := range []string{"petstore-2.0.json", "petstore-expanded-3.0.yaml", "tictactoe-3.1.yaml", "harbor-2.0.yaml"} {
		spec, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		imp, err := Import(spec, f, Options{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Merge(imp.Config, "natsgate.yaml", spec, f, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Config, imp.Config) || len(res.Routes) != 0 || len(res.Gone) != 0 {
			t.Errorf("%s: merge into its own import added %d, gone %v, changed: %v", f, len(res.Routes), res.Gone, !bytes.Equal(res.Config, imp.Config))
		}
	}
}

// TestMergeWithoutCatchAll appends new routes after the last route and
// before the next top-level key.
func TestMergeWithoutCatchAll(t *testing.T) {
	existing := "upstreams:\n  legacy: {url: \"http://127.0.0.1:9\"}\nroutes:\n- name: listOrders\n  method: GET\n  path: /orders\n  upstream: legacy\n# the defaults\ndefaults:\n  timeout: 3s\n"
	res := mustMerge(t, []byte(existing), specV1)
	out := string(res.Config)
	if !strings.HasPrefix(out, "upstreams:\n  legacy: {url: \"http://127.0.0.1:9\"}\nroutes:\n- name: listOrders\n") ||
		!strings.HasSuffix(out, "# the defaults\ndefaults:\n  timeout: 3s\n") {
		t.Errorf("existing text moved:\n%s", out)
	}
	if len(res.Routes) != 2 || !strings.Contains(out, "\n# POST /orders\n- name: createOrder\n  method: POST\n") {
		t.Errorf("new routes not at the list's indentation:\n%s", out)
	}
	again := mustMerge(t, res.Config, specV1)
	if !bytes.Equal(again.Config, res.Config) {
		t.Errorf("second merge changed the file:\n%s", again.Config)
	}
}

func TestMergeRefusesWhatItCannotEdit(t *testing.T) {
	for name, existing := range map[string]string{
		"flow routes": "upstreams: {legacy: {url: \"http://x\"}}\nroutes: [{name: a, path: /a, upstream: legacy}]\n",
		"no routes":   "upstreams: {legacy: {url: \"http://x\"}}\n",
		"bad YAML":    "routes: [\n",
		"no upstream": "upstreams: {old: {url: \"http://x\"}}\nroutes:\n  - {name: a, path: /a, upstream: old}\n",
	} {
		if _, err := Merge([]byte(existing), "natsgate.yaml", []byte(specV1), "shop.yaml", Options{}); err == nil || !strings.Contains(err.Error(), "natsgate.yaml") {
			t.Errorf("%s: err = %v, want one naming natsgate.yaml", name, err)
		}
	}
}
