package gateway

// Tests of how a worker's reply headers reach the HTTP response, as a
// worker in any language can send them: a worker speaking the NATS
// protocol by hand is not held to what nats.go's encoder allows.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// rawWorker answers every request on subject with the header block
// (the lines after "NATS/1.0", each ending in CRLF) and body given,
// written on a plain TCP connection to the server, byte for byte.
func rawWorker(t *testing.T, ns *server.Server, subject, headerLines, body string) {
	t.Helper()
	u, err := url.Parse(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rd := bufio.NewReader(conn)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("raw worker: %q %v", line, err)
	}
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nSUB %s 1\r\nPING\r\n", subject)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("raw worker: %v", err)
		}
		if strings.HasPrefix(line, "PONG") {
			break // subscribed
		}
		if strings.HasPrefix(line, "-ERR") {
			t.Fatalf("raw worker: %s", line)
		}
	}
	hdr := "NATS/1.0\r\n" + headerLines + "\r\n"
	go func() {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return // closed at cleanup
			}
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && f[0] == "PING":
				io.WriteString(conn, "PONG\r\n")
			case len(f) == 6 && f[0] == "HMSG", len(f) == 5 && f[0] == "MSG":
				var n int
				fmt.Sscan(f[len(f)-1], &n)
				if _, err := io.CopyN(io.Discard, rd, int64(n)+2); err != nil {
					return
				}
				fmt.Fprintf(conn, "HPUB %s %d %d\r\n%s%s\r\n", f[3], len(hdr), len(hdr)+len(body), hdr, body)
			}
		}
	}()
}

// rawResponse sends GET target and returns the response's status line,
// its header block exactly as written (lines without their CRLF) and the
// body. It reads the bytes itself, so that what a lenient or strict
// client would make of a bad header cannot hide it.
func rawResponse(t *testing.T, base, target string) (status string, lines []string, body string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n", target)
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of the header block in %q", b)
	}
	all := strings.Split(head, "\r\n")
	return all[0], all[1:], body
}

// values are the values of the header lines named name (any case).
func values(lines []string, name string) []string {
	var out []string
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(k, name) {
			out = append(out, strings.TrimLeft(v, " \t"))
		}
	}
	return out
}

// A reply header value holding a control byte (NUL, CR, ESC, DEL, ...)
// never reaches the response: the value is dropped, the header's other
// values and the other headers pass. A horizontal tab is allowed in a
// field value and passes.
func TestReplyHeaderValuesWithControlBytesDropped(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: get-thing
    method: GET
    path: /thing
    nats: {subject: thing.get, timeout: 5s}
`)
	rawWorker(t, ns, "thing.get", ""+
		"X-Nul: a\x00b\r\n"+
		"X-Cr: a\rSet-Cookie: injected=1\r\n"+ // a lone CR: a line break to some readers
		"X-Esc: \x1b[31mred\r\n"+
		"X-Del: a\x7fb\r\n"+
		"X-Bell: \x07\r\n"+
		"X-Mixed: good\r\n"+
		"X-Mixed: bad\x01\r\n"+
		"X-Tab: a\tb\r\n"+
		"X-Utf8: zoë\r\n"+
		"Content-Type: text/plain\r\n",
		"ok")

	status, lines, body := rawResponse(t, gw.URL, "/thing")
	if status != "HTTP/1.1 200 OK" || body != "ok" {
		t.Fatalf("got %q %q, want 200 ok", status, body)
	}
	for _, l := range lines {
		for i := 0; i < len(l); i++ {
			if c := l[i]; (c < ' ' && c != '\t') || c == 0x7f {
				t.Errorf("response header line %q holds control byte %#x", l, c)
				break
			}
		}
	}
	for _, name := range []string{"X-Nul", "X-Cr", "X-Esc", "X-Del", "X-Bell", "Set-Cookie"} {
		if v := values(lines, name); v != nil {
			t.Errorf("%s: %q reached the response", name, v)
		}
	}
	for name, want := range map[string][]string{"X-Mixed": {"good"}, "X-Tab": {"a\tb"}, "X-Utf8": {"zoë"}, "Content-Type": {"text/plain"}} {
		if got := values(lines, name); !slices.Equal(got, want) {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// NATS header names are case-sensitive, HTTP's are not: spellings of one
// name in a reply (set-cookie, Set-Cookie, SET-COOKIE) become one response
// header holding every value, the canonical spelling's first, then the
// others by spelling, the same on every request.
func TestReplyHeaderCaseVariantsMerge(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: login
    method: GET
    path: /login
    nats: {subject: login, timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	respond(t, worker, "login", func(m *nats.Msg) *nats.Msg {
		return &nats.Msg{Data: []byte("ok"), Header: nats.Header{
			"set-cookie":   {"a=1"},
			"Set-Cookie":   {"b=2", "c=3"},
			"SET-COOKIE":   {"d=4"},
			"x-one":        {"x"},
			"Content-Type": {"text/plain"},
		}}
	})
	want := []string{"b=2", "c=3", "d=4", "a=1"}
	for i := range 10 { // map order differs from one reply to the next
		resp, body := do(t, "GET", gw.URL+"/login", nil, nil)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, want) {
			t.Fatalf("request %d: Set-Cookie %q, want %q", i, got, want)
		}
		if got := resp.Header.Values("X-One"); !slices.Equal(got, []string{"x"}) {
			t.Fatalf("request %d: X-One %q, want [x]", i, got)
		}
	}
}

// An answer from a worker is never content-sniffed: every one carries
// X-Content-Type-Options: nosniff, and a body the worker gave no
// Content-Type is application/octet-stream, not whatever net/http or a
// browser would guess from it (an HTML-looking body would be text/html).
// An empty body gets no Content-Type; a worker's own is kept.
func TestReplyWithoutContentTypeNotSniffed(t *testing.T) {
	ns := natstest.RunServer(t)
	gw := startGateway(t, ns, `
routes:
  - name: page
    method: GET
    path: /page/{kind}
    nats: {subject: "page.{kind}", timeout: 5s}
`)
	worker := natstest.Connect(t, ns)
	html := "<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
	respond(t, worker, "page.*", func(m *nats.Msg) *nats.Msg {
		switch m.Subject {
		case "page.bare":
			return &nats.Msg{Data: []byte(html)}
		case "page.headers":
			return &nats.Msg{Data: []byte(html), Header: nats.Header{"X-Custom": {"1"}}}
		case "page.empty-type":
			return &nats.Msg{Data: []byte(html), Header: nats.Header{"Content-Type": {""}}}
		case "page.typed":
			return &nats.Msg{Data: []byte(html), Header: nats.Header{"Content-Type": {"text/plain; charset=utf-8"}}}
		case "page.created":
			return &nats.Msg{Header: nats.Header{"Http-Status": {"201"}}}
		}
		return &nats.Msg{}
	})
	for _, tt := range []struct {
		kind        string
		status      int
		contentType []string
	}{
		{"bare", 200, []string{"application/octet-stream"}},
		{"headers", 200, []string{"application/octet-stream"}},
		{"empty-type", 200, []string{"application/octet-stream"}},
		{"typed", 200, []string{"text/plain; charset=utf-8"}},
		{"empty", 200, nil},
		{"created", 201, nil},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			resp, _ := do(t, "GET", gw.URL+"/page/"+tt.kind, nil, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Values("Content-Type"); !slices.Equal(got, tt.contentType) {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if got := resp.Header.Values("X-Content-Type-Options"); !slices.Equal(got, []string{"nosniff"}) {
				t.Errorf("X-Content-Type-Options %q, want [nosniff]", got)
			}
		})
	}
}
