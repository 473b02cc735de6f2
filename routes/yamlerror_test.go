package routes_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

// TestYAMLSyntaxErrorLine: a file the YAML parser rejects is reported at
// the line where the problem is, not where the enclosing list or mapping
// began, and an unquoted {…} template in a flow mapping gets a hint to
// quote it.
func TestYAMLSyntaxErrorLine(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		line int
		msg  []string // substrings of the message
		not  []string // and what it must not say
	}{
		{
			name: "key indented less than its mapping",
			yaml: "routes:\n  - name: r1\n    path: /a\n   nats: {subject: a}\n",
			line: 4,
		},
		{
			name: "key outdented out of its list item",
			yaml: "routes:\n  - name: r1\n    path: /a\n  nats:\n    subject: a\n",
			line: 4,
		},
		{
			name: "key indented more than its mapping",
			yaml: "routes:\n  - name: r1\n    path: /a\n      nats: {subject: a}\n",
			line: 4,
		},
		{
			name: "bad indent after a valid multi-line flow mapping",
			yaml: "routes:\n  - name: r1\n    nats: {subject: a,\n      timeout: 2s}\n    path: /a\n   method: GET\n",
			line: 6,
		},
		{
			name: "unquoted template in a flow mapping",
			yaml: "routes:\n  - name: r1\n    path: /a/{id}\n    nats: {subject: a.{id}}\n",
			line: 4,
			msg:  []string{"quote", `"a.{id}"`},
		},
		{
			name: "unquoted path template in a one-line route",
			yaml: "routes:\n  - {name: r1, method: GET, path: /a/{id}, nats: {subject: 'a.{id}'}}\n",
			line: 2,
			msg:  []string{"quote", `"/a/{id}"`},
		},
		{
			name: "tab in the indentation",
			yaml: "routes:\n  - name: r1\n\tpath: /a\n",
			line: 3,
			msg:  []string{"tab", "spaces"},
		},
		{
			name: "tab in the indentation, CRLF line ends",
			yaml: "routes:\r\n\t- name: r1\r\n",
			line: 2,
			msg:  []string{"tab", "spaces"},
		},
		{
			name: "unterminated quote",
			yaml: "routes:\n  - name: r1\n    path: /a\n    nats: {subject: a}\n  - name: \"r2\n    path: /b\n",
			line: 5,
			not:  []string{"quote it"},
		},
		{
			name: "bad indent near the end of a long file",
			yaml: longRoutes(2000) + "  - name: last\n    path: /last\n   nats: {subject: last}\n",
			line: 2000*3 + 4,
		},
		{
			name: "tab as indentation",
			yaml: "routes:\n  - name: r1\n\tpath: /a\n",
			line: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := routes.Load("gate.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("Load accepted\n%s", tt.yaml)
			}
			errs := fieldErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(errs), err)
			}
			if errs[0].Line != tt.line {
				t.Errorf("reported at line %d, want %d: %v\n%s", errs[0].Line, tt.line, err, tt.yaml)
			}
			for _, m := range tt.msg {
				if !strings.Contains(errs[0].Msg, m) {
					t.Errorf("message %q does not say %q", errs[0].Msg, m)
				}
			}
			for _, m := range tt.not {
				if strings.Contains(errs[0].Msg, m) {
					t.Errorf("message %q says %q", errs[0].Msg, m)
				}
			}
		})
	}
}

// longRoutes is a routes list of n valid routes, three lines each after
// the "routes:" line.
func longRoutes(n int) string {
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: r%d\n    path: /r%d\n    nats: {subject: r%d}\n", i, i, i)
	}
	return b.String()
}

// TestYAMLTypeErrorsInWords: a value of the wrong type is reported in
// words a config's author reads (`"five" is not a number`), at its line,
// field and route, without YAML's tags (!!str) or Go's type names.
func TestYAMLTypeErrorsInWords(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want wantError
	}{
		{"word for a number", route("path: /a", "canary_percent: five", "nats: {subject: a}"),
			wantError{4, "r1", "canary_percent", `"five" is not a number`}},
		{"word for a number outside routes", "http:\n  max_inflight: five\n" + route("path: /a", "nats: {subject: a}"),
			wantError{2, "", "http.max_inflight", `"five" is not a number`}},
		{"fraction for a whole number", route("path: /a", "canary_percent: 2.5", "nats: {subject: a}"),
			wantError{4, "r1", "canary_percent", `2.5 is not a whole number`}},
		{"word for true or false", route("path: /a", "fallback: maybe", "nats: {subject: a}"),
			wantError{4, "r1", "fallback", `"maybe" is not true or false`}},
		{"list for a single value", route("method: [GET]", "path: /a", "nats: {subject: a}"),
			wantError{3, "r1", "method", "a list where one value belongs"}},
		{"mapping for a list", "routes: {}\n",
			wantError{1, "", "routes", "a mapping where a list belongs"}},
		{"value for a mapping", route("path: /a", "nats: users.get"),
			wantError{4, "r1", "nats", `"users.get" where a mapping belongs`}},
		{"mapping for a single value, from an unquoted template", route("path: /a/{id}", "nats:", "  subject: {id}"),
			wantError{5, "r1", "nats.subject", "quote"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := routes.Load("gate.yaml", []byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("Load accepted\n%s", tt.yaml)
			}
			errs := fieldErrors(t, err)
			got := findError(errs, tt.want)
			if got == nil {
				t.Fatalf("no problem matching %v in:\n%v", tt.want, err)
			}
			if got.Line != tt.want.line {
				t.Errorf("line = %d, want %d: %v", got.Line, tt.want.line, got)
			}
			for _, e := range errs {
				for _, jargon := range []string{"!!", "unmarshal", "routes.", "[]"} {
					if strings.Contains(e.Msg, jargon) {
						t.Errorf("message %q speaks YAML or Go (%q)", e.Msg, jargon)
					}
				}
			}
		})
	}
}
