package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// A path parameter holding white space, a control or format character
// (Unicode ones too: no-break space, line separator, byte order mark,
// zero-width space, bidi overrides) or invalid UTF-8 is refused with 400,
// whether or not the subject uses it, and nothing is published. Such a
// value is invisible or misleading in logs and to the worker it reaches
// as a header.
func TestPathParamsRejectUnicodeSpaceAndFormat(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-user
    method: GET
    path: /users/{id}
    nats: {subject: "users.{id}.get", timeout: 5s}
  - name: get-file
    method: GET
    path: /files/{name}
    nats: {subject: files.get, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, ">", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte(m.Subject + " " + m.Header.Get("Http-Param-id") + m.Header.Get("Http-Param-name"))}
	})
	rec := record(t, natstest.Connect(t, ns))

	for _, tt := range []struct{ name, value string }{
		{"no-break space", "a%C2%A0b"},
		{"line separator", "a%E2%80%A8b"},
		{"paragraph separator", "a%E2%80%A9b"},
		{"next line (C1)", "a%C2%85b"},
		{"ideographic space", "a%E3%80%80b"},
		{"byte order mark", "%EF%BB%BFa"},
		{"zero-width space", "a%E2%80%8Bb"},
		{"right-to-left override", "a%E2%80%AEb"},
		{"C1 control", "a%C2%9Bb"},
		{"invalid UTF-8", "a%FFb"},
		{"truncated UTF-8", "a%E2%80"},
		{"space", "a%20b"},
		{"tab", "a%09b"},
		{"NUL", "a%00b"},
	} {
		for _, route := range []string{"get-user", "get-file"} {
			t.Run(route+" "+tt.name, func(t *testing.T) {
				prefix := map[string]string{"get-user": "/users/", "get-file": "/files/"}[route]
				resp, body := rawRequest(t, "GET", gw.URL, prefix+tt.value)
				p := checkProblem(t, resp, body, 400, route)
				if p["kind"] != "bad_param" {
					t.Errorf("kind %v, want bad_param", p["kind"])
				}
			})
		}
	}

	// Letters of any script, and symbols, still pass.
	for _, tt := range []struct{ target, want string }{
		{"/users/zo%C3%AB", "users.zoë.get zoë"},
		{"/users/%E6%97%A5%E6%9C%AC", "users.日本.get 日本"},
		{"/files/caf%C3%A9-%E2%82%AC", "files.get café-€"},
	} {
		resp, body := rawRequest(t, "GET", gw.URL, tt.target)
		if resp.StatusCode != 200 || body != tt.want {
			t.Errorf("%s: got %d %q, want 200 %q", tt.target, resp.StatusCode, body, tt.want)
		}
	}
	want := []string{"users.zoë.get", "users.日本.get", "files.get"}
	natstest.Eventually(t, 15*time.Second, "the good requests to be recorded", func() bool { return len(rec.subjects()) >= len(want) })
	if got := rec.subjects(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("published %q, want only %q", got, want)
	}
}
