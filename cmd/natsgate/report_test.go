package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/internal/natstest"
)

// runReport runs `natsgate report args...` as main does.
func runReport(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"report"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// `natsgate report` prints a real gateway's report in the three formats:
// json as the admin API sent it, text as the summary line and a table
// with a row per route, markdown as a GitHub table; all with the same
// figures.
func TestReportFormats(t *testing.T) {
	d := startTestDemo(t)
	// Some traffic on two routes, in settled slots, so that figures show.
	for i := range 30 {
		for _, p := range []string{"/users/42", "/profiles/42"} {
			resp, err := http.Get(d.base + p)
			if err != nil {
				t.Fatalf("GET %s #%d: %v", p, i, err)
			}
			resp.Body.Close()
		}
	}
	var rep gateway.Report
	natstest.Eventually(t, 30*time.Second, "the report to hold the 60 requests", func() bool {
		code, stdout, stderr := runReport(t, "--admin", d.admin, "--format", "json")
		if code != 0 {
			t.Fatalf("--format json: exit %d: %s", code, stderr)
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("--format json printed %q: %v", stdout, err)
		}
		var n uint64
		for _, r := range rep.Routes {
			if r.Legacy != nil {
				n += r.Legacy.Requests
			}
			if r.NATS != nil {
				n += r.NATS.Requests
			}
		}
		return n >= 60
	})
	if len(rep.Routes) != len(d.table.Routes) || rep.Summary.Routes != len(d.table.Routes) {
		t.Fatalf("json: %d routes, summary %d; want %d", len(rep.Routes), rep.Summary.Routes, len(d.table.Routes))
	}

	code, text, stderr := runReport(t, "--admin", d.admin)
	if code != 0 {
		t.Fatalf("text: exit %d: %s", code, stderr)
	}
	lines := strings.Split(text, "\n")
	if lines[0] != rep.Summary.Text || !strings.HasPrefix(lines[0], "5 of 7 routes on NATS, 50 % of traffic; 0 in shadow; ") {
		t.Errorf("text: first line %q, want the summary %q (the 5 routes without an upstream on NATS, get-user answering half the traffic)", lines[0], rep.Summary.Text)
	}
	if !strings.HasPrefix(lines[1], "(fleet history, last ") {
		t.Errorf("text: second line %q, want the window", lines[1])
	}
	header := strings.Fields(lines[3])
	if len(header) < 14 || header[0] != "ROUTE" || header[len(header)-1] != "STATUS" {
		t.Errorf("text: header %q", lines[3])
	}
	rows := map[string][]string{}
	for _, l := range lines[4 : 4+len(d.table.Routes)] {
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	for _, rt := range d.table.Routes {
		if rows[rt.Name] == nil {
			t.Errorf("text: no row for %s in\n%s", rt.Name, text)
		}
	}
	// get-user on NATS: all of its traffic on NATS, a p99, no legacy.
	if f := rows["get-user"]; len(f) != 14 || f[1] != "nats" || f[4] != "100%" || f[6] != "-" || f[8] == "-" || f[13] != "-" {
		t.Errorf("text: get-user row %q, want nats, 100%% NATS, no legacy figures, NATS latency", f)
	}
	// get-profile on legacy with an idle plan, responders found: ready.
	if f := rows["get-profile"]; len(f) != 14 || f[1] != "legacy" || f[2] != "idle" || f[3] != "2" || f[4] != "0%" || f[6] == "-" || f[13] != "ready" {
		t.Errorf("text: get-profile row %q, want legacy, idle, 2 responders, 0%% NATS, legacy latency, ready", f)
	}
	if !strings.Contains(text, "\nready to move (") || !strings.Contains(text, "\nblocked (") {
		t.Errorf("text: no ready and blocked lists in\n%s", text)
	}

	code, md, stderr := runReport(t, "--admin", d.admin, "--format", "markdown")
	if code != 0 {
		t.Fatalf("markdown: exit %d: %s", code, stderr)
	}
	if !strings.HasPrefix(md, "**"+strings.ReplaceAll(rep.Summary.Text, "_", `\_`)+"**\n") {
		t.Errorf("markdown: starts %q, want the summary in bold", strings.SplitN(md, "\n", 2)[0])
	}
	var table []string
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 2+len(d.table.Routes) || table[1] != "|"+strings.Repeat("---|", 14) {
		t.Fatalf("markdown: table\n%s\nwant a header, a rule and %d rows", strings.Join(table, "\n"), len(d.table.Routes))
	}
	for _, l := range table {
		if n := strings.Count(strings.ReplaceAll(l, `\|`, ""), "|"); n != 15 {
			t.Errorf("markdown: %d cell borders in %q, want 15", n, l)
		}
	}
	if !strings.Contains(md, "| `get-profile` | legacy | idle | 2 | 0% |") {
		t.Errorf("markdown: no get-profile row as in the text table:\n%s", md)
	}
}

// Bad usage exits 2 with the usage; a gateway that refuses or cannot be
// reached, or a config that does not load, exits 1 with one line that
// says so.
func TestReportExitCodes(t *testing.T) {
	d := startTestDemo(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := "http://" + ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	u := strings.TrimPrefix(d.admin, "http://")
	_, port, _ := net.SplitHostPort(u)
	routesYAML := "routes:\n  - name: a\n    path: /a\n    nats: {subject: a}\n"
	good := write("good.yaml", "admin:\n  listen: 0.0.0.0:"+port+"\n"+routesYAML)
	broken := write("broken.yaml", "admin:\n  listen: 127.0.0.1:1\n  tokn: x\n"+routesYAML)

	tests := []struct {
		name   string
		args   []string
		code   int
		prefix string // of stdout when code is 0, else of stderr
		has    string
	}{
		{"an unknown format", []string{"--admin", d.admin, "--format", "csv"}, 2, `natsgate report: unknown format "csv"`, "Usage:\n  natsgate report"},
		{"an unknown flag", []string{"--adm", d.admin}, 2, "natsgate report: flag provided but not defined: -adm", "Usage:"},
		{"an argument", []string{"--admin", d.admin, "get-user"}, 2, `natsgate report: unexpected arguments ["get-user"]`, "Usage:"},
		{"nobody listening", []string{"--admin", nobody}, 1, "natsgate report: cannot reach the admin API at " + nobody + "/admin/report: ", "refused"},
		{"no such endpoint", []string{"--admin", d.admin + "/nope"}, 1, "natsgate report: Not Found: ", "no admin endpoint here"},
		{"a broken config", []string{"--config", broken}, 1, broken + ":3: admin.tokn: unknown field", ""},
		{"the address from a config on 0.0.0.0", []string{"--config", good}, 0, demoIdle, ""},
		{"--admin over the config", []string{"--config", write("nowhere.yaml", "admin:\n  listen: 127.0.0.1:1\n"+routesYAML), "--admin", d.admin}, 0, demoIdle, ""},
		{"help", []string{"-h"}, 0, "Usage:\n  natsgate report", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runReport(t, tt.args...)
			got, quiet := stderr, stdout
			if tt.code == 0 {
				got, quiet = stdout, stderr
			}
			if code != tt.code || !strings.HasPrefix(got, tt.prefix) || !strings.Contains(got, tt.has) || quiet != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q … %q", code, stdout, stderr, tt.code, tt.prefix, tt.has)
			}
			if tt.code == 1 && strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q, want one line", stderr)
			}
		})
	}
}

// demoIdle is how the demo's report starts before any traffic: the five
// routes without an upstream are on NATS.
const demoIdle = "5 of 7 routes on NATS, no traffic in the window; 0 in shadow; "
