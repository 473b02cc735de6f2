package importer

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func noEnv(string) (string, bool) { return "", false }

// mustValidate runs the checks natsgate validate makes (routes.Load is
// Parse and Compile) and returns the compiled table.
func mustValidate(t *testing.T, name string, config []byte) *routes.Table {
	t.Helper()
	tab, err := routes.Load(name, config, noEnv)
	if err != nil {
		t.Fatalf("%s does not validate:\n%v\n%s", name, err, config)
	}
	return tab
}

// TestImportRealSpecs imports every public description in testdata, small
// and large, in each format: each output validates, has one route per
// operation not skipped (plus the catch-all, last), in the spec's order.
func TestImportRealSpecs(t *testing.T) {
	for _, tc := range []struct {
		file   string
		format string
		minOps int
	}{
		{"petstore-2.0.json", "Swagger 2.0", 3},
		{"petstore-expanded-3.0.yaml", "OpenAPI 3.0", 4},
		{"tictactoe-3.1.yaml", "OpenAPI 3.1", 3},
		{"harbor-2.0.yaml", "Swagger 2.0", 200},
		{"twilio-api-v2010-3.0.json", "OpenAPI 3.0", 190},
		{"adyen-management-v3-3.1.yaml", "OpenAPI 3.1", 130},
	} {
		t.Run(tc.file, func(t *testing.T) {
			spec, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Import(spec, tc.file, Options{SubjectPrefix: "legacy.api"})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(res.Config, []byte("("+tc.format)) {
				t.Errorf("config does not name the format %s", tc.format)
			}
			if res.Operations < tc.minOps {
				t.Errorf("read %d operations, want at least %d", res.Operations, tc.minOps)
			}
			if got := len(res.Routes) + len(res.Skipped); got != res.Operations {
				t.Errorf("%d routes + %d skipped != %d operations", len(res.Routes), len(res.Skipped), res.Operations)
			}
			for _, s := range res.Skipped {
				if !bytes.Contains(res.Config, []byte("# not imported: "+s.String())) {
					t.Errorf("skipped %s has no comment in the config", s)
				}
			}
			tab := mustValidate(t, tc.file, res.Config)
			if len(tab.Routes) != len(res.Routes)+1 {
				t.Fatalf("table has %d routes, want %d operations + the catch-all", len(tab.Routes), len(res.Routes))
			}
			for i, r := range res.Routes {
				got := tab.Routes[i]
				if got.Name != r.Name || got.Method != r.Method || got.Path != r.Path || got.Subject.String() != r.Subject {
					t.Errorf("route %d: table has %s %s %s %s, want %+v", i, got.Name, got.Method, got.Path, got.Subject, r)
				}
				if got.Cutover != routes.Legacy || got.Upstream == nil || got.Upstream.Name != "legacy" {
					t.Errorf("route %s: stage %v upstream %v, want legacy on legacy", got.Name, got.Cutover, got.Upstream)
				}
				if !strings.HasPrefix(r.Subject, "legacy.api.") || !strings.HasSuffix(r.Subject, "."+strings.ToLower(r.Method)) {
					t.Errorf("route %s: subject %s is not legacy.api.<segments>.<method>", r.Name, r.Subject)
				}
			}
			last := tab.Routes[len(tab.Routes)-1]
			if last.Method != "*" || last.Path != "/*" || last.Subject != nil || last.Upstream == nil {
				t.Errorf("last route is %s %s, want the catch-all to the upstream", last.Method, last.Path)
			}
		})
	}
}

// TestImportGolden pins the whole output for one small description.
// go test ./importer -run TestImportGolden -update rewrites it.
func TestImportGolden(t *testing.T) {
	spec, err := os.ReadFile("testdata/petstore-expanded-3.0.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Import(spec, "petstore-expanded-3.0.yaml", Options{SubjectPrefix: "petstore"})
	if err != nil {
		t.Fatal(err)
	}
	golden := "testdata/petstore-expanded-3.0.golden.yaml"
	if *update {
		if err := os.WriteFile(golden, res.Config, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Config, want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", golden, res.Config)
	}
	mustValidate(t, golden, want)
}

// skippy holds what natsgate cannot route: each is left out with its
// reason, and the rest still validates.
const skippy = `openapi: 3.0.3
info: {title: Odd, version: "1"}
servers: [{url: "http://legacy.internal:9000/base/"}]
paths:
  /files/{path}:
    get: {operationId: getFile, responses: {"200": {description: ok}}}
    trace: {operationId: traceFile, responses: {"200": {description: ok}}}
  /files/{name}:
    delete: {operationId: delete file!, responses: {"200": {description: ok}}}
    get: {operationId: getFile, responses: {"200": {description: ok}}}
  /glob/*:
    get: {responses: {"200": {description: ok}}}
  /reports/{report.id}.json:
    get: {summary: "A report,\n on two lines", responses: {"200": {description: ok}}}
  /a/{id}/b/{id}:
    get: {operationId: "true", responses: {"200": {description: ok}}}
`

func TestImportSkipsWhatNatsgateCannotRoute(t *testing.T) {
	res, err := Import([]byte(skippy), "odd.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	tab := mustValidate(t, "odd.yaml", res.Config)
	var got []string
	for _, r := range tab.Routes {
		got = append(got, r.Name+" "+r.Method+" "+r.Path+" "+func() string {
			if r.Subject == nil {
				return "-"
			}
			return r.Subject.String()
		}())
	}
	want := []string{
		"getFile GET /base/files/{path} api.files.{path}.get",
		"delete-file DELETE /base/files/{name} api.files.{name}.delete",
		"get-reports-report_id-.json GET /base/reports/{report_id}.json api.reports.{report_id}.json.get",
		"legacy-rest * /* -",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	reasons := map[string]string{
		"TRACE /files/{path}": "natsgate routes no TRACE",
		"GET /files/{name}":   "same route as GET /files/{path}",
		"GET /glob/*":         "literal *",
		"GET /a/{id}/b/{id}":  "chi cannot route",
	}
	if len(res.Skipped) != len(reasons) {
		t.Errorf("skipped %v, want %d", res.Skipped, len(reasons))
	}
	for _, s := range res.Skipped {
		if w, ok := reasons[s.Method+" "+s.Path]; !ok || !strings.Contains(s.Reason, w) {
			t.Errorf("skipped %s, want reason with %q", s, w)
		}
	}
	if !bytes.Contains(res.Config, []byte(`url: "http://legacy.internal:9000"`)) {
		t.Errorf("upstream is not the server's scheme and host:\n%s", res.Config)
	}
	if !bytes.Contains(res.Config, []byte("# GET /reports/{report.id}.json: A report, on two lines\n")) {
		t.Errorf("summary is not one comment line:\n%s", res.Config)
	}
}

func TestImportUnreadableSpecNamesFile(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		line       int
	}{
		{"malformed YAML", "openapi: 3.0.0\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n   get: [\n", 6},
		{"missing $ref", "openapi: 3.0.0\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      responses:\n        '200': {$ref: '#/components/responses/nope'}\n", 7},
		{"not a description", "hello: world\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Import([]byte(tc.spec), "bad-spec.yaml", Options{})
			var se *SpecError
			if !errors.Is(err, ErrUnreadableSpec) || !errors.As(err, &se) {
				t.Fatalf("err = %v, want a SpecError", err)
			}
			if se.File != "bad-spec.yaml" || !strings.HasPrefix(err.Error(), "bad-spec.yaml:") {
				t.Errorf("err %q does not name the file", err)
			}
			if tc.line > 0 && se.Line != tc.line {
				t.Errorf("err %q: line %d, want %d", err, se.Line, tc.line)
			}
		})
	}
}

func TestImportRejectsBadOptions(t *testing.T) {
	spec, _ := os.ReadFile("testdata/petstore-2.0.json")
	for _, o := range []Options{
		{SubjectPrefix: "a.*"}, {SubjectPrefix: "a..b"}, {SubjectPrefix: "{x}"},
		{Upstream: "bad name"}, {UpstreamURL: "ftp://x"}, {UpstreamURL: "http://x/?q=1"},
	} {
		if _, err := Import(spec, "petstore-2.0.json", o); err == nil {
			t.Errorf("Import accepted %+v", o)
		}
	}
}

// FuzzDerive: for any path, operationId and method, whatever parsePath
// accepts yields a route name natsgate accepts (or ""), a subject that
// parses with only the path's parameters, and a chi pattern whose
// parameters are the subject's.
func FuzzDerive(f *testing.F) {
	f.Add("/pets/{id}", "findPet", "GET")
	f.Add("/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json", "", "POST")
	f.Add("/a/{x.y}-{z}/b.c", "op id!", "DELETE")
	f.Fuzz(func(t *testing.T, path, opID, method string) {
		segs, err := parsePath(path)
		if err != nil {
			return
		}
		if name := routeNameFor(opID, method, segs); name != "" && !validName(name) {
			t.Fatalf("name %q is not valid", name)
		}
		subj := subjectFor("api", segs, "get")
		s, err := routes.ParseSubject(subj)
		if err != nil {
			t.Fatalf("subject %q from %q: %v", subj, path, err)
		}
		pattern := chiPattern("", segs)
		for _, p := range s.Params() {
			if !strings.Contains(pattern, "{"+p+"}") {
				t.Fatalf("subject %q uses {%s}, pattern %q lacks it", subj, p, pattern)
			}
		}
	})
}
