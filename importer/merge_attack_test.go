package importer

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// attackSpec has three operations natsgate routes and one it skips.
const attackSpec = `openapi: 3.1.0
info: {title: Shop, version: "1"}
paths:
  /orders:
    get: {operationId: listOrders, responses: {"200": {description: ok}}}
    post: {operationId: createOrder, responses: {"201": {description: ok}}}
  /orders/{id}:
    delete: {operationId: deleteOrder, responses: {"204": {description: ok}}}
  /bad/{}:
    get: {responses: {"200": {description: ok}}}
`

// mergeTwice merges attackSpec into existing, checks the result
// validates, merges again and checks nothing changed the second time.
func mergeTwice(t *testing.T, existing string, env map[string]string) *Result {
	t.Helper()
	opts := Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	first, err := Merge([]byte(existing), "natsgate.yaml", []byte(attackSpec), "shop.yaml", opts)
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	second, err := Merge(first.Config, "natsgate.yaml", []byte(attackSpec), "shop.yaml", opts)
	if err != nil {
		t.Fatalf("second merge: %v", err)
	}
	if !bytes.Equal(first.Config, second.Config) || len(second.Routes) != 0 {
		t.Errorf("a second merge changed the file (added %d routes):\n--- first\n%s\n--- second\n%s", len(second.Routes), first.Config, second.Config)
	}
	return first
}

func addedNames(r *Result) string {
	var names []string
	for _, rt := range r.Routes {
		names = append(names, rt.Name)
	}
	return strings.Join(names, ",")
}

// A route the loader reads through a merge key or a ${VAR} is the same
// route to Merge: it must not add the operation again beside it.
func TestMergeSeesRoutesAsTheLoaderReadsThem(t *testing.T) {
	const up = "upstreams:\n  legacy: {url: \"http://127.0.0.1:8081\"}\n"
	tests := []struct {
		name, existing string
		env            map[string]string
	}{
		{"merge key", up + "routes:\n  - &list\n    name: list\n    method: GET\n    path: /orders\n    nats: {subject: api.orders.get}\n    upstream: legacy\n" +
			"  - <<: *list\n    name: create\n    method: POST\n    nats: {subject: api.orders.post}\n", nil},
		{"variable in the path", up + "routes:\n  - name: list\n    method: GET\n    path: ${BASE}/orders\n    nats: {subject: api.orders.get}\n    upstream: legacy\n" +
			"  - name: create\n    method: ${CREATE}\n    path: /orders\n    nats: {subject: api.orders.post}\n    upstream: legacy\n",
			map[string]string{"BASE": "", "CREATE": "POST"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mergeTwice(t, tt.existing, tt.env)
			if got := addedNames(res); got != "deleteOrder" {
				t.Errorf("added %q, want only deleteOrder", got)
			}
			if len(res.Gone) != 0 {
				t.Errorf("gone %v, want none", res.Gone)
			}
		})
	}
}

// A file saved with CRLF line endings gets each skipped operation's
// comment once, however often it is merged.
func TestMergeCRLFFileKeepsOneSkipComment(t *testing.T) {
	imported, err := Import([]byte(attackSpec), "shop.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	crlf := strings.ReplaceAll(string(imported.Config), "\n", "\r\n")
	res := mergeTwice(t, crlf, nil)
	if n := strings.Count(string(res.Config), "# not imported: GET /bad/{}"); n != 1 {
		t.Errorf("the skip comment is in the merged file %d times, want 1:\n%s", n, res.Config)
	}
	if len(res.Routes) != 0 {
		t.Errorf("added %q to a file that has every route", addedNames(res))
	}
}

// Routes are added inside the YAML document that holds the routes, and
// in the file's own indentation, so that the loader reads them.
func TestMergeAddsRoutesWhereTheLoaderReadsThem(t *testing.T) {
	const up = "upstreams:\n  legacy: {url: \"http://127.0.0.1:8081\"}\n"
	const list = "name: list\n    method: GET\n    path: /orders\n    nats: {subject: api.orders.get}\n    upstream: legacy\n"
	tests := []struct{ name, existing string }{
		{"document end marker", "---\n" + up + "routes:\n  - " + list + "...\n"},
		{"document end marker, no catch-all, comments after", up + "routes:\n  - " + list + "# the end\n...\n# after the document\n"},
		{"keys further in than after the dash", up + "routes:\n    -   name: list\n        method: GET\n        path: /orders\n        nats: {subject: api.orders.get}\n        upstream: legacy\n" +
			"    -\n        name: legacy-rest\n        method: \"*\"\n        path: /*\n        upstream: legacy\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mergeTwice(t, tt.existing, nil)
			if got := addedNames(res); got != "createOrder,deleteOrder" {
				t.Errorf("added %q, want createOrder,deleteOrder", got)
			}
			tab := mustValidate(t, "merged", res.Config)
			if tab.Route("createOrder") == nil || tab.Route("deleteOrder") == nil {
				t.Errorf("the loader does not read the added routes:\n%s", res.Config)
			}
		})
	}
}

// A description past MaxSpecBytes is refused before it is parsed: the
// reader takes about 140 bytes of memory per byte of a file of small
// nodes (a 50 MB one held 6.6 GB), so size is the bound that holds.
func TestImportRefusesHugeSpec(t *testing.T) {
	var b strings.Builder
	b.WriteString("openapi: 3.0.3\ninfo: {title: t, version: '1'}\nx-blob: '")
	b.WriteString(strings.Repeat("a", MaxSpecBytes))
	b.WriteString("'\npaths:\n  /a:\n    get: {responses: {'200': {description: ok}}}\n")
	huge := []byte(b.String())
	_, err := Import(huge, "huge.yaml", Options{})
	var se *SpecError
	if !errors.As(err, &se) || !errors.Is(err, ErrUnreadableSpec) || se.File != "huge.yaml" || !strings.Contains(err.Error(), "MiB") {
		t.Errorf("Import of a %d-byte description: %v, want a SpecError naming huge.yaml and the limit", len(huge), err)
	}
	existing, err := Import([]byte(attackSpec), "shop.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Merge(existing.Config, "natsgate.yaml", huge, "huge.yaml", Options{}); !errors.As(err, &se) || se.File != "huge.yaml" {
		t.Errorf("Merge of a %d-byte description: %v, want a SpecError naming huge.yaml", len(huge), err)
	}
}
