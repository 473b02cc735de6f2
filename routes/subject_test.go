package routes_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/natsgate/natsgate/routes"
)

func mustSubject(t testing.TB, tmpl string) *routes.Subject {
	t.Helper()
	s, err := routes.ParseSubject(tmpl)
	if err != nil {
		t.Fatalf("ParseSubject(%q): %v", tmpl, err)
	}
	return s
}

func TestRender(t *testing.T) {
	tests := []struct {
		name   string
		tmpl   string
		names  []string
		values []string
		max    int
		want   string
	}{
		{"literal", "users.list", nil, nil, 0, "users.list"},
		{"literal ignores params", "users.list", []string{"id"}, []string{"a.b"}, 0, "users.list"},
		{"one param", "users.{id}.get", []string{"id"}, []string{"42"}, 0, "users.42.get"},
		{"param as the whole subject", "{id}", []string{"id"}, []string{"x"}, 0, "x"},
		{"two params", "orgs.{org}.users.{id}", []string{"org", "id"}, []string{"acme", "7"}, 0, "orgs.acme.users.7"},
		{"params in path order differ from template order", "{b}.{a}", []string{"a", "b"}, []string{"1", "2"}, 0, "2.1"},
		{"mixed token", "users.user-{id}.get", []string{"id"}, []string{"7"}, 0, "users.user-7.get"},
		{"two params in one token", "a.{x}-{y}.b", []string{"x", "y"}, []string{"1", "2"}, 0, "a.1-2.b"},
		{"param used twice", "a.{id}.b.{id}", []string{"id"}, []string{"z"}, 0, "a.z.b.z"},
		{"unicode value", "users.{id}", []string{"id"}, []string{"zoë"}, 0, "users.zoë"},
		{"punctuation that is fine in a token", "f.{name}", []string{"name"}, []string{"a-b_c:d/e%f@g"}, 0, "f.a-b_c:d/e%f@g"},
		{"exactly max", "a.{id}", []string{"id"}, []string{"bcd"}, 5, "a.bcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mustSubject(t, tt.tmpl).Render(tt.names, tt.values, tt.max)
			if err != nil || got != tt.want {
				t.Errorf("Render = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestRenderRejects(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name  string
		tmpl  string
		value string
		max   int
		want  error
	}{
		{"dot", "users.{id}", ".", 0, routes.ErrBadParam},
		{"dot inside", "users.{id}", "a.b", 0, routes.ErrBadParam},
		{"star", "users.{id}", "*", 0, routes.ErrBadParam},
		{"star inside", "users.{id}", "a*", 0, routes.ErrBadParam},
		{"greater-than", "users.{id}", ">", 0, routes.ErrBadParam},
		{"greater-than inside", "users.user-{id}", "a>", 0, routes.ErrBadParam},
		{"space", "users.{id}", "a b", 0, routes.ErrBadParam},
		{"tab", "users.{id}", "a\tb", 0, routes.ErrBadParam},
		{"CR", "users.{id}", "a\rb", 0, routes.ErrBadParam},
		{"LF", "users.{id}", "a\nb", 0, routes.ErrBadParam},
		{"CRLF injection", "users.{id}", "x\r\nPUB evil 1\r\n", 0, routes.ErrBadParam},
		{"NUL", "users.{id}", "a\x00b", 0, routes.ErrBadParam},
		{"DEL", "users.{id}", "a\x7f", 0, routes.ErrBadParam},
		{"other control", "users.{id}", "\x1b[31m", 0, routes.ErrBadParam},
		{"empty", "users.{id}", "", 0, routes.ErrBadParam},
		{"empty in a mixed token", "users.user-{id}", "", 0, routes.ErrBadParam},
		{"invalid UTF-8", "users.{id}", "a\xffb", 0, routes.ErrBadParam},
		{"truncated UTF-8", "users.{id}", "\xc3", 0, routes.ErrBadParam},
		{"too long", "users.{id}", long, 256, routes.ErrSubjectTooLong},
		{"one over max", "a.{id}", "bcde", 5, routes.ErrSubjectTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mustSubject(t, tt.tmpl).Render([]string{"id"}, []string{tt.value}, tt.max)
			if !errors.Is(err, tt.want) {
				t.Errorf("Render(%q) = %q, %v; want %v", tt.value, got, err, tt.want)
			}
			if got != "" {
				t.Errorf("Render(%q) returned a subject %q with its error", tt.value, got)
			}
		})
	}
	// A parameter the request did not supply renders as empty: refused.
	if _, err := mustSubject(t, "a.{id}").Render([]string{"other"}, []string{"x"}, 0); !errors.Is(err, routes.ErrBadParam) {
		t.Errorf("missing parameter: got %v, want ErrBadParam", err)
	}
}

func TestParseSubject(t *testing.T) {
	good := map[string][]string{
		"a":               nil,
		"users.{id}.get":  {"id"},
		"a.x{id}y":        {"id"},
		"{a}.{b}.{a}":     {"a", "b"},
		"ünïcode.{id}":    {"id"},
		"a-b_c:d/e%f.{x}": {"x"},
	}
	for tmpl, params := range good {
		s, err := routes.ParseSubject(tmpl)
		if err != nil {
			t.Errorf("ParseSubject(%q): %v", tmpl, err)
			continue
		}
		if s.String() != tmpl || strings.Join(s.Params(), ",") != strings.Join(params, ",") || s.IsLiteral() != (len(params) == 0) {
			t.Errorf("ParseSubject(%q) = %q params %q literal %v", tmpl, s, s.Params(), s.IsLiteral())
		}
	}
	bad := []string{
		"", ".", "a.", ".a", "a..b",
		"*", ">", "a.*", "a.>", "a.*.b", "a*", "a.b>", "{id}*",
		"a b", "a\tb", "a\nb", "a\r", "a\x00", "a\x7f", "\xff", "a.\xc3",
		"{", "a.{id", "a.{}", "a.{a{b}", "a.{x:y}", "a}b", "a.{id}}", "a.{id.b}",
	}
	for _, tmpl := range bad {
		if s, err := routes.ParseSubject(tmpl); err == nil {
			t.Errorf("ParseSubject(%q) = %q, want an error", tmpl, s)
		}
	}
}

func TestCheckToken(t *testing.T) {
	for _, v := range []string{"a", "42", "user-7", "zoë", "a:b", "%2E", "😀"} {
		if err := routes.CheckToken(v); err != nil {
			t.Errorf("CheckToken(%q): %v", v, err)
		}
	}
	for _, v := range []string{"", ".", "*", ">", " ", "\t", "\r", "\n", "\x00", "\x7f", "\xff", "a.b"} {
		if err := routes.CheckToken(v); !errors.Is(err, routes.ErrBadParam) {
			t.Errorf("CheckToken(%q) = %v, want ErrBadParam", v, err)
		}
	}
}

// checkRendered asserts what every rendered subject must hold: as many
// tokens as the template, none empty, none a wildcard, no white space or
// control characters, valid UTF-8.
func checkRendered(t *testing.T, tmpl, subject string) {
	t.Helper()
	if !utf8.ValidString(subject) {
		t.Fatalf("%q rendered invalid UTF-8 %q", tmpl, subject)
	}
	tokens := strings.Split(subject, ".")
	if want := strings.Count(tmpl, ".") + 1; len(tokens) != want {
		t.Fatalf("%q rendered %q: %d tokens, want %d", tmpl, subject, len(tokens), want)
	}
	for _, tok := range tokens {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, "*>") {
			t.Fatalf("%q rendered %q: bad token %q", tmpl, subject, tok)
		}
	}
	for i := 0; i < len(subject); i++ {
		if c := subject[i]; c <= ' ' || c == 0x7f {
			t.Fatalf("%q rendered %q: byte %#x", tmpl, subject, c)
		}
	}
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"users.{id}.get", "a", "a.x{id}y.{b}", "a.*", "{a}{b}", "a..b", "{", "}", "a.{id}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tmpl string) {
		s, err := routes.ParseSubject(tmpl)
		if err != nil {
			return
		}
		if s.String() != tmpl {
			t.Fatalf("String() = %q, want %q", s.String(), tmpl)
		}
		values := make([]string, len(s.Params()))
		for i := range values {
			values[i] = "v"
		}
		out, err := s.Render(s.Params(), values, 0)
		if err != nil {
			t.Fatalf("%q: rendering a plain value: %v", tmpl, err)
		}
		checkRendered(t, tmpl, out)
	})
}

func FuzzRender(f *testing.F) {
	f.Add("users.{id}.get", "42", 0)
	f.Add("users.user-{id}", "a.b", 0)
	f.Add("{id}", ">", 0)
	f.Add("a.{id}.{id}", "x y", 0)
	f.Add("a.{id}", "\r\nPUB x 1", 0)
	f.Add("a.{id}", strings.Repeat("x", 300), 256)
	f.Fuzz(func(t *testing.T, tmpl, value string, max int) {
		s, err := routes.ParseSubject(tmpl)
		if err != nil {
			return
		}
		values := make([]string, len(s.Params()))
		for i := range values {
			values[i] = value
		}
		out, err := s.Render(s.Params(), values, max)
		if err != nil {
			if !errors.Is(err, routes.ErrBadParam) && !errors.Is(err, routes.ErrSubjectTooLong) {
				t.Fatalf("Render: unexpected error %v", err)
			}
			if out != "" {
				t.Fatalf("Render returned %q with error %v", out, err)
			}
			return
		}
		checkRendered(t, tmpl, out)
		if max > 0 && !s.IsLiteral() && len(out) > max {
			t.Fatalf("rendered %d bytes, over max %d", len(out), max)
		}
	})
}
