package routes_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/routes"
)

// TestNATSURLListThatNamesNoServer: a nats.url list that is empty, or
// whose only item is empty (an unfilled template value, ${VAR:-} of an
// unset variable), names no server. Read as no nats.url, it would start
// the embedded server, and the gateway would serve with no worker in
// reach; it is a config error at the list's or the item's line instead.
func TestNATSURLListThatNamesNoServer(t *testing.T) {
	tests := []struct {
		name, url string
		want      string
	}{
		{"an empty list", "url: []", "list.yaml:2: nats.url:"},
		{"an empty flow item", `url: [""]`, "list.yaml:2: nats.url[0]:"},
		{"an empty block item", "url:\n    - \"\"", "list.yaml:3: nats.url[0]:"},
		{"an item expanded to nothing", "url: [\"${EMPTY}\"]", "list.yaml:2: nats.url[0]:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "nats:\n  " + tt.url + "\n" + route("path: /a", "nats: {subject: a}")
			tb, err := routes.Load("list.yaml", []byte(text), env(map[string]string{"EMPTY": ""}))
			if err == nil {
				t.Fatalf("loaded, with nats.url %q from %q; want a config error", tb.Config.NATS.URL, tb.Config.NATS.URLFrom)
			}
			if !errors.Is(err, routes.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one naming %q", err, tt.want)
			}
		})
	}
}
