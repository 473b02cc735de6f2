package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

// How the commands that talk to a running gateway (rollout, report) find
// its admin API and read its answers.

// adminTimeout bounds one exchange with the admin API, so a gateway that
// accepts and never answers cannot hang a command.
const adminTimeout = 15 * time.Second

// adminProblem is the part of an RFC 9457 problem body the command prints.
type adminProblem struct {
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Route     string `json:"route"`
	RequestID string `json:"request_id"`
}

// adminTarget is the admin API's base URL and bearer token: --admin, else
// admin.listen from --config (dialled on loopback when it listens
// everywhere), else http://127.0.0.1:9090; --token, else admin.token from
// --config, else $NATSGATE_ADMIN_TOKEN. A config that does not load is
// the error, as gateway.LoadConfig reports it.
func adminTarget(configFile, admin, token string) (base, tok string, err error) {
	base, tok = "http://"+loopbackFor(routes.DefaultAdminListen), os.Getenv(gateway.TokenEnv)
	if configFile != "" {
		t, err := gateway.LoadConfig(configFile)
		if err != nil {
			return "", "", err
		}
		base = "http://" + loopbackFor(t.Config.Admin.Listen)
		if t.Config.Admin.Token != "" {
			tok = t.Config.Admin.Token
		}
	}
	if admin != "" {
		base = admin
		if !strings.Contains(base, "://") {
			base = "http://" + base
		}
	}
	if token != "" {
		tok = token
	}
	return strings.TrimRight(base, "/"), tok, nil
}

// loopbackFor turns a listen address into one a client on the same host
// dials: ":9090", "0.0.0.0:9090" and "[::]:9090" listen everywhere,
// loopback included.
func loopbackFor(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch ip := net.ParseIP(host); {
	case host == "":
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified() && ip.To4() != nil:
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// adminDo sends one request to the admin API and returns the body of a
// 200 answer, or an error that says what failed: the URL it could not
// reach, or the problem body's title and detail.
func adminDo(req *http.Request) ([]byte, error) {
	endpoint := req.URL.String()
	req.Header.Set("Accept", "application/json, application/problem+json")
	client := &http.Client{Timeout: adminTimeout}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the admin API at %s: %v", endpoint, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer from %s: %v", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p adminProblem
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") && json.Unmarshal(raw, &p) == nil && p.Title != "" {
			if p.Detail == "" {
				p.Detail = fmt.Sprintf("status %d", resp.StatusCode)
			}
			return nil, fmt.Errorf("%s: %s", p.Title, p.Detail)
		}
		return nil, fmt.Errorf("%s: %s answered %q", http.StatusText(resp.StatusCode), endpoint, clipText(string(raw), 200))
	}
	return raw, nil
}

// unwrapURLError drops net/http's `Get "URL":` prefix: the message names
// the URL once already.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// clipText shortens a body quoted in an error.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
