package routes_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// noEnv resolves no variable at all.
func noEnv(string) (string, bool) { return "", false }

// env resolves variables from a map.
func env(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

// fieldErrors undoes errors.Join and returns every *FieldError in err.
func fieldErrors(t *testing.T, err error) []*routes.FieldError {
	t.Helper()
	var out []*routes.FieldError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *routes.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("error %q (%T) is not a *routes.FieldError", err, err)
			return
		}
		out = append(out, fe)
	}
	walk(err)
	return out
}

// wantError is one problem a config must be reported with.
type wantError struct {
	line  int
	route string
	field string
	msg   string // a substring of the message
}

func (w wantError) String() string {
	return fmt.Sprintf("line %d route %q field %q msg ~%q", w.line, w.route, w.field, w.msg)
}

// findError returns the error matching want's field, route and message.
func findError(errs []*routes.FieldError, want wantError) *routes.FieldError {
	for _, e := range errs {
		if e.Field == want.field && e.Route == want.route && strings.Contains(e.Msg, want.msg) {
			return e
		}
	}
	return nil
}

// route wraps one route's YAML lines (indented by four spaces) in a
// config, so that the first route line is line 3 of the file.
func route(lines ...string) string {
	return "routes:\n  - name: r1\n" + "    " + strings.Join(lines, "\n    ") + "\n"
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want wantError
	}{
		{
			name: "unknown key in a route",
			yaml: route("path: /a", "nats:", "  subject: a", "  timout: 2s"),
			want: wantError{6, "r1", "nats.timout", `unknown field (did you mean "timeout"?)`},
		},
		{
			name: "unknown key at the top",
			yaml: "listen: 1\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{1, "", "listen", "unknown field"},
		},
		{
			name: "unknown key in a section",
			yaml: "defaults:\n  max_bdy: 1MiB\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "defaults.max_bdy", `did you mean "max_body"?`},
		},
		{
			name: "fleet subject prefix with a wildcard",
			yaml: "fleet:\n  subject_prefix: natsgate.*\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "fleet.subject_prefix", `"natsgate.*" is not a NATS subject without wildcards`},
		},
		{
			name: "fleet subject prefix with an empty token",
			yaml: "fleet:\n  subject_prefix: natsgate..fleet\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "fleet.subject_prefix", `"natsgate..fleet" is not a NATS subject without wildcards`},
		},
		{
			name: "fleet replica id with a dot",
			yaml: "fleet:\n  replica_id: web.3\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "fleet.replica_id", `"web.3" must be one subject token`},
		},
		{
			name: "fleet leader ttl under a second",
			yaml: "fleet:\n  leader_ttl: 500ms\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "fleet.leader_ttl", "500ms must be at least 1s"},
		},
		{
			name: "discovery interval under a second",
			yaml: "discovery:\n  interval: 500ms\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "discovery.interval", "500ms must be at least 1s"},
		},
		{
			name: "fleet leader bucket with a dot",
			yaml: "fleet:\n  leader_bucket: natsgate.leader\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "fleet.leader_bucket", `"natsgate.leader" is not a key-value bucket name`},
		},
		{
			name: "duplicate route names",
			yaml: route("path: /a", "nats: {subject: a}") + "  - name: r1\n    path: /b\n    nats: {subject: b}\n",
			want: wantError{5, "r1", "name", `duplicate route name "r1" (first at line 2)`},
		},
		{
			name: "subject names a param the path lacks",
			yaml: route("path: /users/{id}", "nats:", "  subject: users.{user}.get"),
			want: wantError{5, "r1", "nats.subject", `uses {user} but the path "/users/{id}" has no such parameter`},
		},
		{
			name: "unparsable route timeout",
			yaml: route("path: /a", "nats:", "  subject: a", "  timeout: 5 seconds"),
			want: wantError{6, "r1", "nats.timeout", `"5 seconds" is not a duration`},
		},
		{
			name: "duration without a unit",
			yaml: route("path: /a", "nats:", "  subject: a", "  timeout: 5"),
			want: wantError{6, "r1", "nats.timeout", `"5" is not a duration`},
		},
		{
			name: "negative duration",
			yaml: route("path: /a", "nats:", "  subject: a", "  timeout: -1s"),
			want: wantError{6, "r1", "nats.timeout", `"-1s" is not a duration`},
		},
		{
			name: "unparsable default duration",
			yaml: "defaults:\n  timeout: soon\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "defaults.timeout", `"soon" is not a duration`},
		},
		{
			name: "unparsable route size",
			yaml: route("path: /a", "max_body: 1XB", "nats: {subject: a}"),
			want: wantError{4, "r1", "max_body", `"1XB" is not a size`},
		},
		{
			name: "fractional size",
			yaml: "defaults:\n  max_body: 1.5MiB\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "defaults.max_body", `"1.5MiB" is not a size`},
		},
		{
			name: "duration in a flow mapping",
			yaml: "routes:\n  - {name: r1, path: /a, nats: {subject: a, timeout: x}}\n",
			want: wantError{2, "r1", "nats.timeout", `"x" is not a duration`},
		},
		{
			name: "wildcard * in a subject",
			yaml: route("path: /a", "nats:", "  subject: a.*.b"),
			want: wantError{5, "r1", "nats.subject", `wildcard "*"`},
		},
		{
			name: "wildcard > in a subject",
			yaml: route("path: /a", "nats:", "  subject: a.>"),
			want: wantError{5, "r1", "nats.subject", `wildcard ">"`},
		},
		{
			name: "wildcard inside a subject token",
			yaml: route("path: /a/{id}", "nats:", "  subject: a.x*{id}"),
			want: wantError{5, "r1", "nats.subject", "wildcard"},
		},
		{
			name: "empty subject token",
			yaml: route("path: /a", "nats:", "  subject: a..b"),
			want: wantError{5, "r1", "nats.subject", "empty token"},
		},
		{
			name: "bad pattern",
			yaml: route("path: /a", "nats:", "  subject: a", "  pattern: stream"),
			want: wantError{6, "r1", "nats.pattern", `unknown pattern "stream"`},
		},
		{
			name: "bad method",
			yaml: route("method: FETCH", "path: /a", "nats: {subject: a}"),
			want: wantError{3, "r1", "method", `unknown method "FETCH"`},
		},
		{
			name: "method of the wrong type",
			yaml: route("method: [GET]", "path: /a", "nats: {subject: a}"),
			want: wantError{3, "r1", "method", "a list where one value belongs"},
		},
		{
			name: "path without a leading slash",
			yaml: route("path: users", "nats: {subject: a}"),
			want: wantError{3, "r1", "path", `"users" must start with /`},
		},
		{
			name: "path chi cannot route",
			yaml: route("path: /a/{id}/{id}", "nats: {subject: 'a.{id}'}"),
			want: wantError{3, "r1", "path", "duplicate param key"},
		},
		{
			name: "path parameter name that cannot be a header",
			yaml: route(`path: "/a/{user id}"`, `nats: {subject: "a.{user id}"}`),
			want: wantError{3, "r1", "path", `parameter name "user id" takes only letters`},
		},
		{
			name: "path parameter name with a line break",
			yaml: route(`path: "/a/{x\nNats-Msg-Id: 1}"`, "nats: {subject: a}"),
			want: wantError{3, "r1", "path", `parameter name "x\nNats-Msg-Id"`},
		},
		{
			name: "unset variable",
			yaml: route("path: /a", "nats:", "  subject: a.${SUFFIX}"),
			want: wantError{5, "r1", "nats.subject", "environment variable SUFFIX is not set"},
		},
		{
			name: "unset variable outside routes",
			yaml: "nats:\n  url: ${NATS_URL}\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "nats.url", "environment variable NATS_URL is not set"},
		},
		{
			name: "bad upstream reference",
			yaml: route("path: /a", "upstream: legacy", "nats: {subject: a}"),
			want: wantError{4, "r1", "upstream", `no upstream named "legacy"`},
		},
		{
			name: "bad upstream url",
			yaml: "upstreams:\n  legacy:\n    url: ftp://old\n" + route("path: /a", "upstream: legacy"),
			want: wantError{3, "", "upstreams.legacy.url", `"ftp://old" is not an http or https URL`},
		},
		{
			name: "unknown cutover stage",
			yaml: route("path: /a", "cutover: halfway", "nats: {subject: a}"),
			want: wantError{4, "r1", "cutover", `unknown cutover stage "halfway"`},
		},
		{
			name: "canary without an upstream",
			yaml: route("path: /a", "cutover: canary", "nats: {subject: a}"),
			want: wantError{4, "r1", "cutover", "stage canary needs an upstream"},
		},
		{
			name: "nats stage without a nats section",
			yaml: "upstreams:\n  legacy: {url: http://old}\n" + route("path: /a", "upstream: legacy", "cutover: nats"),
			want: wantError{7, "r1", "cutover", "stage nats needs a nats section"},
		},
		{
			name: "shadow with a publish route",
			yaml: "upstreams:\n  legacy: {url: http://old}\n" + route("path: /a", "upstream: legacy", "cutover: shadow", "nats: {subject: a, pattern: publish}"),
			want: wantError{7, "r1", "cutover", "shadow compares answers"},
		},
		{
			name: "canary percent out of range",
			yaml: "upstreams:\n  legacy: {url: http://old}\n" + route("path: /a", "upstream: legacy", "cutover: canary", "canary_percent: 101", "nats: {subject: a}"),
			want: wantError{8, "r1", "canary_percent", "must be 0 to 100, not 101"},
		},
		{
			name: "fallback without an upstream",
			yaml: route("path: /a", "fallback: true", "nats: {subject: a}"),
			want: wantError{4, "r1", "fallback", "fallback needs an upstream"},
		},
		{
			name: "route with neither nats nor upstream",
			yaml: route("path: /a"),
			want: wantError{2, "r1", "", "a route needs nats, an upstream, or both"},
		},
		{
			name: "forward_headers naming Http-*",
			yaml: route("path: /a", "forward_headers:", "  - X-Tenant", "  - Http-Status", "nats: {subject: a}"),
			want: wantError{6, "r1", "forward_headers[1]", `"Http-Status" is reserved`},
		},
		{
			name: "forward_headers naming Nats-* in lower case",
			yaml: route("path: /a", "forward_headers:", "  - nats-msg-id", "nats: {subject: a}"),
			want: wantError{5, "r1", "forward_headers[0]", `"nats-msg-id" is reserved`},
		},
		{
			name: "forward_headers naming a bad header",
			yaml: route("path: /a", "forward_headers:", "  - 'X Tenant'", "nats: {subject: a}"),
			want: wantError{5, "r1", "forward_headers[0]", `"X Tenant" is not a header name`},
		},
		{
			name: "route without a name",
			yaml: "routes:\n  - path: /a\n    nats: {subject: a}\n",
			want: wantError{2, "#1", "name", "every route needs a name"},
		},
		{
			name: "no routes",
			yaml: "http:\n  listen: 127.0.0.1:8080\n",
			want: wantError{0, "", "routes", "no routes"},
		},
		{
			name: "routes of the wrong type",
			yaml: "routes: {}\n",
			want: wantError{1, "", "routes", "a mapping where a list belongs"},
		},
		{
			name: "bad listen address",
			yaml: "http:\n  listen: localhost\n" + route("path: /a", "nats: {subject: a}"),
			want: wantError{2, "", "http.listen", `"localhost" is not a host:port address`},
		},
		{
			name: "literal subject longer than max_subject",
			yaml: "defaults:\n  max_subject: 8\n" + route("path: /a", "nats:", "  subject: abcdefgh.i"),
			want: wantError{7, "r1", "nats.subject", "longer than defaults.max_subject"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := routes.Load("gate.yaml", []byte(tt.yaml), env(tt.env))
			if err == nil {
				t.Fatalf("Load accepted\n%s", tt.yaml)
			}
			if !errors.Is(err, routes.ErrInvalidConfig) {
				t.Errorf("errors.Is(err, ErrInvalidConfig) = false for %v", err)
			}
			errs := fieldErrors(t, err)
			got := findError(errs, tt.want)
			if got == nil {
				t.Fatalf("want an error %v, got:\n%v", tt.want, err)
			}
			if got.File != "gate.yaml" || got.Line != tt.want.line {
				t.Errorf("error at %s:%d, want gate.yaml:%d: %v", got.File, got.Line, tt.want.line, got)
			}
			// The printed error names file:line, the route and the field.
			prefix := "gate.yaml"
			if tt.want.line > 0 {
				prefix += fmt.Sprintf(":%d", tt.want.line)
			}
			prefix += ": "
			if tt.want.route != "" {
				prefix += fmt.Sprintf("route %q: ", tt.want.route)
			}
			if tt.want.field != "" {
				prefix += tt.want.field + ": "
			}
			if s := got.Error(); !strings.HasPrefix(s, prefix) {
				t.Errorf("error reads %q, want it to start with %q", s, prefix)
			}
			if !strings.Contains(err.Error(), got.Error()) {
				t.Errorf("the joined error %q leaves out %q", err, got)
			}
		})
	}
}

// A file with many problems reports all of them, in file order.
func TestLoadReportsEveryProblem(t *testing.T) {
	yaml := `defaults:
  timeout: soon
  max_body: lots
routes:
  - name: a
    path: /a/{id}
    nats:
      subject: a.{ident}
      timout: 1s
  - name: a
    method: FETCH
    path: /b
    nats:
      subject: b.>
      pattern: stream
  - name: c
    path: /c
    upstream: nowhere
    forward_headers: [Nats-Rollup]
`
	_, err := routes.Load("many.yaml", []byte(yaml), noEnv)
	if !errors.Is(err, routes.ErrInvalidConfig) {
		t.Fatalf("want ErrInvalidConfig, got %v", err)
	}
	want := []wantError{
		{2, "", "defaults.timeout", "not a duration"},
		{3, "", "defaults.max_body", "not a size"},
		{8, "a", "nats.subject", "uses {ident}"},
		{9, "a", "nats.timout", "unknown field"},
		{10, "a", "name", "duplicate route name"},
		{11, "a", "method", "unknown method"},
		{14, "a", "nats.subject", "wildcard"},
		{15, "a", "nats.pattern", "unknown pattern"},
		{18, "c", "upstream", "no upstream named"},
		{19, "c", "forward_headers[0]", "reserved"},
	}
	errs := fieldErrors(t, err)
	for _, w := range want {
		got := findError(errs, w)
		if got == nil {
			t.Errorf("missing %v", w)
			continue
		}
		if got.Line != w.line {
			t.Errorf("%v reported at line %d", w, got.Line)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Errorf("errors out of file order: line %d after line %d", errs[i].Line, errs[i-1].Line)
		}
	}
}

func TestLoadMalformedYAML(t *testing.T) {
	for _, text := range []string{"", "routes:\n- [", "a: b: c", "routes:\n  - name: a\n\tpath: /a\n"} {
		_, err := routes.Load("bad.yaml", []byte(text), noEnv)
		if !errors.Is(err, routes.ErrInvalidConfig) {
			t.Errorf("Load(%q) = %v, want ErrInvalidConfig", text, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), "bad.yaml") {
			t.Errorf("Load(%q): %q does not name the file", text, err)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	yaml := `nats:
  url: nats://${NATS_HOST}:4222
  token: ${TOKEN}
http:
  listen: "${HOST}:8080"
  max_inflight: ${INFLIGHT}
defaults:
  timeout: ${TIMEOUT}
routes:
  - name: r1
    path: /a/{id}
    nats:
      subject: ${PREFIX}.{id}
`
	vars := map[string]string{
		"NATS_HOST": "nats.internal",
		"TOKEN":     "s3cret ${NOT_EXPANDED}",
		"HOST":      "0.0.0.0",
		"INFLIGHT":  "42",
		"TIMEOUT":   "750ms",
		"PREFIX":    "svc.users",
	}
	tb, err := routes.Load("env.yaml", []byte(yaml), env(vars))
	if err != nil {
		t.Fatal(err)
	}
	c := tb.Config
	if c.NATS.URL != "nats://nats.internal:4222" {
		t.Errorf("nats.url = %q", c.NATS.URL)
	}
	// A variable's value is used as it is, never expanded again.
	if c.NATS.Token != "s3cret ${NOT_EXPANDED}" {
		t.Errorf("nats.token = %q", c.NATS.Token)
	}
	if c.HTTP.Listen != "0.0.0.0:8080" {
		t.Errorf("http.listen = %q", c.HTTP.Listen)
	}
	if c.HTTP.MaxInflight != 42 {
		t.Errorf("http.max_inflight = %d, want 42 from ${INFLIGHT}", c.HTTP.MaxInflight)
	}
	if tb.Routes[0].Timeout != 750*time.Millisecond {
		t.Errorf("timeout = %v", tb.Routes[0].Timeout)
	}
	if got := tb.Routes[0].Subject.String(); got != "svc.users.{id}" {
		t.Errorf("subject = %q", got)
	}
}

// A value reached through a YAML alias is expanded once, like any other:
// a variable's value is never itself expanded.
func TestEnvExpansionThroughAlias(t *testing.T) {
	yaml := `nats:
  url: nats://127.0.0.1:4222
  user: &cred "${CRED}"
  password: *cred
routes:
  - name: r1
    path: /a
    nats: {subject: a}
`
	tb, err := routes.Load("alias.yaml", []byte(yaml), env(map[string]string{"CRED": "p${ASS}"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Config.NATS.Password; got != "p${ASS}" {
		t.Errorf("nats.password = %q, want %q", got, "p${ASS}")
	}
}

// YAML merge keys let routes share a block.
func TestMergeKeys(t *testing.T) {
	yaml := `routes:
  - name: r1
    path: /a
    nats: &common
      subject: a
      pattern: publish
      timeout: 1s
  - name: r2
    path: /b
    nats:
      <<: *common
      subject: b
`
	tb, err := routes.Load("merge.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	r := tb.Route("r2")
	if r.Subject.String() != "b" || r.Pattern != routes.Publish || r.Timeout != time.Second {
		t.Errorf("r2 = subject %s pattern %s timeout %v, want b publish 1s", r.Subject, r.Pattern, r.Timeout)
	}
}

func TestDefaultsFilled(t *testing.T) {
	tb, err := routes.Load("min.yaml", []byte(`routes:
  - name: get-user
    path: /users/{id}
    nats:
      subject: users.{id}.get
  - name: big
    method: post
    path: /big
    max_body: 8MiB
    nats: {subject: big, timeout: 250ms, pattern: jetstream}
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	c := tb.Config
	checks := []struct {
		name      string
		got, want any
	}{
		{"http.listen", c.HTTP.Listen, routes.DefaultListen},
		{"admin.listen", c.Admin.Listen, routes.DefaultAdminListen},
		{"nats.url", c.NATS.URL, ""},
		{"nats.name", c.NATS.Name, "natsgate"},
		{"nats.embedded.listen", c.NATS.Embedded.Listen, routes.DefaultEmbeddedListen},
		{"nats.max_reconnects", *c.NATS.MaxReconnects, -1},
		{"nats.reconnect_wait", time.Duration(c.NATS.ReconnectWait), routes.DefaultReconnectWait},
		{"http.read_header_timeout", time.Duration(c.HTTP.ReadHeaderTimeout), routes.DefaultReadHeaderTimeout},
		{"http.max_header_bytes", int64(c.HTTP.MaxHeaderBytes), int64(routes.DefaultMaxHeaderBytes)},
		{"http.max_inflight", c.HTTP.MaxInflight, routes.DefaultMaxInflight},
		{"http.shutdown_grace", time.Duration(c.HTTP.ShutdownGrace), routes.DefaultShutdownGrace},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"log.access", *c.Log.Access, true},
		{"fleet.enabled", *c.Fleet.Enabled, true},
		{"fleet.replica_id", c.Fleet.ReplicaID, ""},
		{"fleet.subject_prefix", c.Fleet.SubjectPrefix, routes.DefaultFleetSubjectPrefix},
		{"fleet.leader_ttl", time.Duration(c.Fleet.LeaderTTL), routes.DefaultFleetLeaderTTL},
		{"fleet.leader_bucket", c.Fleet.LeaderBucket, routes.DefaultFleetLeaderBucket},
		{"discovery.enabled", *c.Discovery.Enabled, true},
		{"discovery.interval", time.Duration(c.Discovery.Interval), routes.DefaultDiscoveryInterval},
		{"defaults.timeout", time.Duration(c.Defaults.Timeout), routes.DefaultTimeout},
		{"defaults.max_body", int64(c.Defaults.MaxBody), int64(routes.DefaultMaxBody)},
		{"get-user method", tb.Routes[0].Method, "*"},
		{"get-user pattern", tb.Routes[0].Pattern, routes.Request},
		{"get-user timeout", tb.Routes[0].Timeout, routes.DefaultTimeout},
		{"get-user max_body", tb.Routes[0].MaxBody, int64(routes.DefaultMaxBody)},
		{"get-user max_subject", tb.Routes[0].MaxSubject, routes.DefaultMaxSubject},
		{"get-user cutover", tb.Routes[0].Cutover, routes.NATS},
		{"get-user breaker", tb.Routes[0].Breaker, routes.Breaker{MinRequests: routes.DefaultBreakerMinRequests, FailureRatio: routes.DefaultBreakerFailureRatio, Window: routes.DefaultBreakerWindow, OpenFor: routes.DefaultBreakerOpenFor}},
		{"get-user params", strings.Join(tb.Routes[0].Params, ","), "id"},
		{"get-user source", tb.Routes[0].Source, "min.yaml:2"},
		{"big method", tb.Routes[1].Method, "POST"},
		{"big max_body", tb.Routes[1].MaxBody, int64(8 << 20)},
		{"big timeout", tb.Routes[1].Timeout, 250 * time.Millisecond},
		{"big pattern", tb.Routes[1].Pattern, routes.JetStream},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseByteSize(t *testing.T) {
	good := map[string]int64{"0": 0, "512": 512, "512B": 512, "64KiB": 64 << 10, "1MiB": 1 << 20, "1MB": 1000000, "2 GiB": 2 << 30, "3KB": 3000}
	for in, want := range good {
		if got, err := routes.ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "1XB", "1 TiB", "99999999999GiB", "0x10"} {
		if got, err := routes.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

// A mapping or sequence where a scalar belongs names its field too.
func TestLoadCollectionTypeErrors(t *testing.T) {
	tests := []struct {
		yaml string
		want wantError
	}{
		{"routes:\n  - name: [x]\n    path: /a\n    nats: {subject: a}\n", wantError{2, "#1", "name", "a list where one value belongs"}},
		{"routes:\n  - name: r1\n    path: /a\n    nats:\n      subject:\n        deep: x\n", wantError{6, "r1", "nats.subject", "a mapping where one value belongs"}},
	}
	for _, tt := range tests {
		_, err := routes.Load("c.yaml", []byte(tt.yaml), noEnv)
		if got := findError(fieldErrors(t, err), tt.want); got == nil || got.Line != tt.want.line {
			t.Errorf("want %v, got %v", tt.want, err)
		}
	}
}

// Path parameters are read as chi reads them, so the subject can name
// exactly the parameters chi will fill.
func TestPathParams(t *testing.T) {
	tests := []struct {
		path, subject string
		want          string
	}{
		{"/users/{id}", "users.{id}", "id"},
		{"/orgs/{org}/users/{userId}", "orgs.{org}.users.{userId}", "org,userId"},
		{"/a/{id:[0-9]+}", "a.{id}", "id"},
		{"/a/{id:[0-9]{3}}", "a.{id}", "id"},
		{"/a/{code:[A-Z]{2,3}}/{n}", "a.{code}.{n}", "code,n"},
		{"/a/{id}-{x}", "a.{id}.{x}", "id,x"},
		{"/files/*", "files.{*}", "*"},
		{"/a/{id}/*", "a.{id}", "id,*"},
	}
	for _, tt := range tests {
		tb, err := routes.Load("p.yaml", []byte(route("path: '"+tt.path+"'", "nats: {subject: '"+tt.subject+"'}")), noEnv)
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if got := strings.Join(tb.Routes[0].Params, ","); got != tt.want {
			t.Errorf("%s: params %q, want %q", tt.path, got, tt.want)
		}
	}
	// A name chi would not fill is refused, whatever the regexp holds.
	if _, err := routes.Load("p.yaml", []byte(route("path: '/a/{id:[0-9]{3}}'", "nats: {subject: 'a.{3}'}")), noEnv); err == nil {
		t.Error(`subject "a.{3}" accepted for the path /a/{id:[0-9]{3}}`)
	}
}

// An alias that refers to its own anchor is an error, not an endless walk.
func TestRecursiveAlias(t *testing.T) {
	for _, yaml := range []string{
		"routes:\n  - name: a\n    path: /a\n    nats: &n\n      <<: *n\n",
		"routes: &r\n  - name: a\n    path: /a\n    nats: {subject: a}\n  - *r\n",
		"routes:\n  - &r\n    name: a\n    path: /a\n    nats: {subject: a}\n    breaker: *r\n",
	} {
		if _, err := routes.Load("alias.yaml", []byte(yaml), noEnv); !errors.Is(err, routes.ErrInvalidConfig) {
			t.Errorf("Load(%q) = %v, want ErrInvalidConfig", yaml, err)
		}
	}
}
