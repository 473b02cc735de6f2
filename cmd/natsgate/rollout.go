package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/natsgate/natsgate/gateway"
)

const rolloutUsage = `Usage:
  natsgate rollout status|start|pause|resume|abort ROUTE [--admin URL] [--token T] [-c FILE] [--json] [--cert FILE --key FILE]

status shows a route's rollout plan as the fleet's leader runs it: its state,
step, gates and last decisions. start, pause, resume and abort move it.

  --admin URL         the admin API (default: admin.listen from --config,
                      else http://127.0.0.1:9090)
  --token T           bearer token for start, pause, resume and abort
                      (default: admin.token from --config, else
                      $NATSGATE_ADMIN_TOKEN)
  -c, --config FILE   read the admin address and token from a natsgate config
  --json              print the admin API's JSON as received
` + adminCertUsage

// rolloutHistoryShown is how many of the last decisions status prints.
const rolloutHistoryShown = 5

var rolloutActions = []string{"status", "start", "pause", "resume", "abort"}

// rolloutCmd runs `natsgate rollout ACTION ROUTE`: it reads or moves a
// route's rollout through the admin API. Flags may come before, between or
// after the action and the route. It returns the exit code: 0 done, 1 the
// gateway refused or could not be reached, 2 bad usage.
func rolloutCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsgate rollout", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, with the usage
	admin := fs.String("admin", "", "admin API URL")
	token := fs.String("token", "", "admin bearer token")
	config := fs.String("config", "", "natsgate configuration file")
	fs.StringVar(config, "c", "", "short for --config")
	asJSON := fs.Bool("json", false, "print the JSON as received")
	cert, key := adminCertFlags(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(stdout, rolloutUsage)
				return 0
			}
			fmt.Fprintf(stderr, "natsgate rollout: %v\n\n%s", err, rolloutUsage)
			return 2
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos, args = append(pos, args[0]), args[1:]
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "natsgate rollout: want an action and a route, got %q\n\n%s", pos, rolloutUsage)
		return 2
	}
	action, route := pos[0], pos[1]
	if !slices.Contains(rolloutActions, action) {
		fmt.Fprintf(stderr, "natsgate rollout: unknown action %q (use %s)\n\n%s", action, strings.Join(rolloutActions, ", "), rolloutUsage)
		return 2
	}
	if route == "" {
		fmt.Fprintf(stderr, "natsgate rollout: the route name is empty\n\n%s", rolloutUsage)
		return 2
	}

	e, err := adminTarget(*config, *admin, *token)
	if err == nil {
		err = e.withClientCert(*cert, *key)
	}
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	endpoint := e.Base + "/admin/routes/" + url.PathEscape(route) + "/rollout"

	st, raw, err := rolloutCall(e, endpoint, action)
	if err != nil {
		fmt.Fprintf(stderr, "natsgate rollout: %v\n", err)
		return 1
	}
	switch {
	case *asJSON:
		_, _ = stdout.Write(raw)
		if len(raw) > 0 && raw[len(raw)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
	case action == "status":
		printRolloutStatus(stdout, st, time.Now())
	default:
		fmt.Fprintln(stdout, rolloutLine(st))
	}
	return 0
}

// rolloutCall asks the admin API: GET for status, PUT {"action": ...} for
// the others. It returns the decoded answer and its bytes, or an error
// that says what failed: the URL it could not reach, or the problem body's
// title and detail.
func rolloutCall(e adminEndpoint, endpoint, action string) (*gateway.RolloutStatus, []byte, error) {
	var req *http.Request
	var err error
	if action == "status" {
		req, err = http.NewRequest(http.MethodGet, endpoint, nil)
	} else {
		body, _ := json.Marshal(map[string]string{"action": action})
		req, err = http.NewRequest(http.MethodPut, endpoint, bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Natsgate-Actor", rolloutActor())
			if e.Token != "" {
				req.Header.Set("Authorization", "Bearer "+e.Token)
			}
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bad admin URL %q: %v", endpoint, err)
	}
	raw, err := adminDo(e, req)
	if err != nil {
		return nil, nil, err
	}
	var st gateway.RolloutStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, nil, fmt.Errorf("%s answered what is not a rollout status: %v", endpoint, err)
	}
	return &st, raw, nil
}

// rolloutActor names the person moving a rollout for the gateway's audit
// line, as user@host. The admin API keeps it only if it is at most 128
// printable ASCII characters, so anything else is dropped here.
func rolloutActor() string {
	user := os.Getenv("USER")
	if user == "" {
		user = os.Getenv("USERNAME")
	}
	if user == "" {
		user = "unknown"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	var b strings.Builder
	for _, c := range []byte(user + "@" + host) {
		if c >= ' ' && c <= '~' && b.Len() < 128 {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// rolloutLine is the one-line summary: state, step and stage.
func rolloutLine(st *gateway.RolloutStatus) string {
	line := fmt.Sprintf("%s: %s, step %d/%d", st.Route, st.State, st.Step, st.Steps)
	if st.Stage != "" {
		line += ": " + string(st.Stage)
		if st.Stage == "canary" {
			line += fmt.Sprintf(" %d%%", st.Percent)
		}
	}
	return line
}

// printRolloutStatus prints status for a person: the summary line, since
// when, each gate's verdict and the last few decisions.
func printRolloutStatus(w io.Writer, st *gateway.RolloutStatus, now time.Time) {
	fmt.Fprintln(w, rolloutLine(st))
	if st.Since != nil {
		since := shortTime(*st.Since)
		if !now.Before(*st.Since) {
			since += fmt.Sprintf(" (%s ago)", now.Sub(*st.Since).Truncate(time.Second))
		}
		fmt.Fprintf(w, "  since %s\n", since)
	}
	if st.Leader != "" {
		fmt.Fprintf(w, "  leader %s\n", st.Leader)
	}
	if len(st.Gates) > 0 {
		fmt.Fprintln(w, "gates:")
		for _, g := range st.Gates {
			verdict := "no verdict"
			if g.OK != nil && *g.OK {
				verdict = "ok"
			} else if g.OK != nil {
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "  %-22s value %-10s limit %-10s %s\n", g.Name, number(g.Value), number(&g.Limit), verdict)
		}
	}
	if len(st.History) > 0 {
		fmt.Fprintln(w, "history:")
		h := st.History
		if len(h) > rolloutHistoryShown {
			h = h[len(h)-rolloutHistoryShown:]
		}
		for _, e := range h {
			line := fmt.Sprintf("  %s  %s", shortTime(e.At), e.Decision)
			if e.From != "" || e.To != "" {
				line += fmt.Sprintf(" %s -> %s", e.From, e.To)
			}
			if e.Reason != "" {
				line += ": " + e.Reason
			}
			if e.By != "" {
				line += " (by " + e.By + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
}

// shortTime prints a time in RFC 3339 to the second, in UTC.
func shortTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}

// number prints a gate's figure, "-" when there is none.
func number(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4g", *v)
}
