package routes_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

// TestNATSURLList: nats.url may be a YAML list, each item expanded like
// any value, read as the comma-separated string; an item that is not a
// URL is reported at its own line.
func TestNATSURLList(t *testing.T) {
	text := "nats:\n  url:\n    - nats://a:4222\n    - ${SECOND}\n" + route("path: /a", "nats: {subject: a}")
	tb, err := routes.Load("list.yaml", []byte(text), env(map[string]string{"SECOND": "nats://b:4222"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tb.Config.NATS.URL, "nats://a:4222,nats://b:4222"; got != want {
		t.Errorf("nats.url = %q, want %q", got, want)
	}

	text = "nats:\n  url:\n    - nats://a:4222\n    - {host: b}\n" + route("path: /a", "nats: {subject: a}")
	_, err = routes.Load("list.yaml", []byte(text), noEnv)
	if !errors.Is(err, routes.ErrInvalidConfig) || !strings.Contains(err.Error(), "list.yaml:4: nats.url[1]:") {
		t.Errorf("a mapping in the url list: error = %v, want one naming list.yaml:4 and nats.url[1]", err)
	}
}

// TestNATSURLFromEnvironment: NATS_URL is used when the config has no
// nats.url (and no context), and the table says where the URL came from;
// the config's own url wins over it; without either the URL stays empty
// (the embedded server).
func TestNATSURLFromEnvironment(t *testing.T) {
	body := route("path: /a", "nats: {subject: a}")
	tests := []struct {
		name, yaml string
		env        map[string]string
		url, from  string
	}{
		{"NATS_URL alone", body, map[string]string{"NATS_URL": "nats://env:4222"}, "nats://env:4222", "NATS_URL"},
		{"the config wins", "nats: {url: nats://cfg:4222}\n" + body, map[string]string{"NATS_URL": "nats://env:4222"}, "nats://cfg:4222", "config"},
		{"neither: embedded", body, nil, "", ""},
		{"an empty NATS_URL counts as unset", body, map[string]string{"NATS_URL": ""}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := routes.Load("env.yaml", []byte(tt.yaml), env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if tb.Config.NATS.URL != tt.url || tb.Config.NATS.URLFrom != tt.from {
				t.Errorf("nats.url = %q from %q, want %q from %q", tb.Config.NATS.URL, tb.Config.NATS.URLFrom, tt.url, tt.from)
			}
		})
	}
}

// TestInboxPrefixChecked: nats.inbox_prefix must be subject tokens without
// wildcards, since nats.go appends ".<nuid>" to it for every inbox.
func TestInboxPrefixChecked(t *testing.T) {
	for _, p := range []string{"'gw.*'", "'gw.>'", "gw.", "'gw..replies'", "'gw replies'"} {
		text := "nats:\n  inbox_prefix: " + p + "\n" + route("path: /a", "nats: {subject: a}")
		_, err := routes.Load("inbox.yaml", []byte(text), noEnv)
		if !errors.Is(err, routes.ErrInvalidConfig) || !strings.Contains(err.Error(), "inbox.yaml:2: nats.inbox_prefix:") {
			t.Errorf("inbox_prefix %s: error = %v, want one naming inbox.yaml:2 and nats.inbox_prefix", p, err)
		}
	}
	tb, err := routes.Load("inbox.yaml", []byte("nats:\n  inbox_prefix: _INBOX_gw.replies\n"+route("path: /a", "nats: {subject: a}")), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if tb.Config.NATS.InboxPrefix != "_INBOX_gw.replies" {
		t.Errorf("nats.inbox_prefix = %q", tb.Config.NATS.InboxPrefix)
	}
}
