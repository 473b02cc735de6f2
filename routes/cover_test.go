package routes_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
	"github.com/natsgate/natsgate/routes"
)

func TestSubjectCoveredBy(t *testing.T) {
	tests := []struct {
		tmpl, pattern string
		want          bool
	}{
		{"users.{id}.get", "users.*.get", true},
		{"users.{id}.get", "users.>", true},
		{"users.{id}.get", ">", true},
		{"users.{id}.get", "*.*.*", true},
		{"users.{id}.get", "users.*.*", true},
		{"users.{id}.get", "users.7.get", false},          // one rendering of many
		{"users.{id}.get", "users.*", false},              // too few tokens
		{"users.{id}.get", "users.*.get.more", false},     // too many tokens
		{"users.{id}.get", "users.*.put", false},          // another literal
		{"users.{id}.get", "users.*.get.>", false},        // > needs one more token
		{"users.{id}.get", "orders.*.get", false},         // another literal first
		{"users.list", "users.list", true},                // literal equal
		{"users.list", "users.*", true},                   // wildcard over a literal
		{"users.list", "users.>", true},                   // > over one token
		{"users.list", "users", false},                    // > is not implied
		{"users", "users.>", false},                       // > matches one or more, not zero
		{"users.user-{id}.get", "users.*.get", true},      // a mixed token varies too
		{"users.user-{id}.get", "users.user-.get", false}, // a literal never covers a mixed token
		{"users.user-{id}.get", "users.user-{id}.get", false},
		{"orgs.{org}.users.{id}", "orgs.*.users.*", true},
		{"orgs.{org}.users.{id}", "orgs.acme.users.*", false},
		{"a.b", "", false},
		{"a.b", "a..b", false},
		{"a.b", "a.>.b", false}, // > only last
	}
	for _, tt := range tests {
		t.Run(tt.tmpl+" by "+tt.pattern, func(t *testing.T) {
			if got := mustSubject(t, tt.tmpl).CoveredBy(tt.pattern); got != tt.want {
				t.Errorf("CoveredBy = %v, want %v", got, tt.want)
			}
		})
	}
}

// FuzzSubjectCoveredBy checks CoveredBy against a real nats-server's
// routing: rendered with a value that appears nowhere in the pattern, the
// template reaches a subscription on the pattern exactly when the pattern
// covers it (a pattern that covers every rendering covers that one; one
// that does not fails on a token that value makes differ). Another
// rendering must reach it too when the pattern covers the template.
// (server.SubjectMatchesFilter is not the reference: it takes a token
// like "*0" for a wildcard, which the server's routing does not.)
func FuzzSubjectCoveredBy(f *testing.F) {
	for _, s := range [][3]string{
		{"users.{id}.get", "users.*.get", "7"},
		{"users.{id}.get", "users.>", "x"},
		{"users.{id}.get", "users.7.get", "7"},
		{"users.list", "users.list", ""},
		{"users", "users.>", ""},
		{"a.pre-{x}.b", "a.*.>", "q"},
		{"{a}.{b}", "*.b", "b"},
		{"a.{0}.0", "*0.>", "0"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	nc := natstest.Connect(f, natstest.RunServer(f))
	n := 0
	delivered := func(t *testing.T, subject, pattern string) bool {
		n++
		ch := make(chan *nats.Msg, 16)
		sub, err := nc.ChanSubscribe(pattern, ch)
		if err != nil {
			t.Fatalf("subscribe %q: %v", pattern, err)
		}
		defer sub.Unsubscribe()
		done := fmt.Sprintf("_fuzz_done.%d", n)
		dsub, err := nc.ChanSubscribe(done, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer dsub.Unsubscribe()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		// One connection's messages arrive in order: the marker comes
		// after the message, if the server routed it to the pattern.
		_ = nc.Publish(subject, nil)
		_ = nc.Publish(done, nil)
		got := false
		timeout := time.After(10 * time.Second)
		for {
			select {
			case m := <-ch:
				if m.Sub == dsub {
					return got
				}
				if m.Sub == sub && m.Subject == subject {
					got = true
				}
			case <-timeout:
				t.Fatalf("the marker %s never came back", done)
			}
		}
	}
	f.Fuzz(func(t *testing.T, tmpl, pattern, value string) {
		// Subjects longer than a protocol line would close the connection.
		if len(tmpl) > 256 || len(pattern) > 256 || len(value) > 64 {
			return
		}
		s, err := routes.ParseSubject(tmpl)
		if err != nil || !server.IsValidSubject(pattern) || strings.HasPrefix(pattern, "_fuzz_done") {
			return
		}
		fresh := "q"
		for strings.Contains(pattern, fresh) {
			fresh += "q"
		}
		names := s.Params()
		values := make([]string, len(names))
		for i := range values {
			values[i] = fresh
		}
		rendered, err := s.Render(names, values, 0)
		if err != nil {
			t.Fatalf("render %q with %q: %v", tmpl, fresh, err)
		}
		covered := s.CoveredBy(pattern)
		if got := delivered(t, rendered, pattern); got != covered {
			t.Fatalf("CoveredBy(%q) of %q = %v, but nats-server routes %q to it: %v", pattern, tmpl, covered, rendered, got)
		}
		if !covered || routes.CheckToken(value) != nil {
			return
		}
		for i := range values {
			values[i] = value
		}
		if rendered, err = s.Render(names, values, 0); err == nil && !delivered(t, rendered, pattern) {
			t.Fatalf("CoveredBy(%q) of %q, but nats-server does not route the rendering %q to it", pattern, tmpl, rendered)
		}
	})
}
