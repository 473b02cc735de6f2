package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is headless Chromium driven over the DevTools protocol on a
// pipe (--remote-debugging-pipe: JSON messages ending in a NUL byte on
// file descriptors 3 and 4), so a test can type and click as a person
// would, with nothing but the standard library.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	send    io.WriteCloser
	mu      sync.Mutex
	nextID  int
	waiting map[int]chan cdpMessage
	session string
}

type cdpMessage struct {
	ID     int             `json:"id"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// openBrowser starts chromium and opens url in a new page.
func openBrowser(t *testing.T, bin, url string) *browser {
	t.Helper()
	toChrome, fromTest, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fromChrome, toTest, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--window-size=1400,900",
		"--remote-debugging-pipe", "about:blank")
	cmd.ExtraFiles = []*os.File{toChrome, toTest} // fd 3: commands in, fd 4: answers out
	if err := cmd.Start(); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	toChrome.Close()
	toTest.Close()
	b := &browser{t: t, cmd: cmd, send: fromTest, waiting: map[int]chan cdpMessage{}}
	done := make(chan struct{})
	go b.read(fromChrome, done)
	t.Cleanup(func() {
		fromTest.Close() // chromium exits when its command pipe closes
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	var target struct {
		TargetID string `json:"targetId"`
	}
	b.call("", "Target.createTarget", map[string]any{"url": url}, &target)
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached)
	b.session = attached.SessionID
	return b
}

// read hands each answer to the call waiting for it; events are dropped.
func (b *browser) read(r io.Reader, done chan struct{}) {
	defer close(done)
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m cdpMessage
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m
		}
	}
}

// call sends one command and decodes its result into out.
func (b *browser) call(session, method string, params any, out any) {
	b.t.Helper()
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpMessage, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	data, _ := json.Marshal(msg)
	if _, err := b.send.Write(append(data, 0)); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			b.t.Fatalf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(m.Result, out); err != nil {
				b.t.Fatalf("%s: %v", method, err)
			}
		}
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s: no answer from chromium in 30s", method)
	}
}

// eval runs JavaScript in the page and returns its value as JSON text.
func (b *browser) eval(js string) string {
	b.t.Helper()
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	b.call(b.session, "Runtime.evaluate", map[string]any{"expression": js, "returnByValue": true, "awaitPromise": true}, &res)
	if res.ExceptionDetails != nil {
		b.t.Fatalf("page script %q: %s", js, res.ExceptionDetails.Text)
	}
	return string(res.Result.Value)
}

// waitFor polls a page expression until it is true, within a bound.
func (b *browser) waitFor(what, js string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for b.eval(js) != "true" {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s (%s)", what, js)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// routeStage reads a route's stage and percent from GET /admin/routes.
func routeStage(t *testing.T, admin, name string) string {
	t.Helper()
	resp, err := http.Get(admin + "/admin/routes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Routes []struct {
			Name          string `json:"name"`
			Stage         string `json:"stage"`
			CanaryPercent int    `json:"canary_percent"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, r := range list.Routes {
		if r.Name == name {
			return fmt.Sprintf("%s %d", r.Stage, r.CanaryPercent)
		}
	}
	return ""
}

// TestDashboardChangesStage uses the dashboard's stage control in a real
// browser, as an operator would: paste the token, pick canary 30%, Apply;
// a wrong token is refused with the API's reason; Reset returns the route
// to its configured stage.
func TestDashboardChangesStage(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not on PATH: this test drives the dashboard in headless Chromium (Debian's chromium package; .ci/run installs it)")
	}
	d := startTestDemo(t)
	b := openBrowser(t, bin, d.admin+"/")

	const row = `document.querySelector('tr[data-route="get-profile"]')`
	const sel = row + `?.querySelector('select')`
	b.waitFor("the get-profile row and its stage control", `(`+sel+` ?? null) !== null && !document.getElementById('auth').hidden`)
	b.waitFor("the header naming the fleet", `document.getElementById('scope').textContent === 'fleet of 1 replica'`)
	if got := b.eval(sel + `.disabled`); got != "true" {
		t.Fatalf("stage control enabled before a token is given (disabled=%s)", got)
	}
	if got := b.eval(`document.querySelector('tr[data-route="legacy-rest"] select') === null`); got != "true" {
		t.Errorf("legacy-rest has no NATS side, yet has a stage control")
	}

	setToken := func(tok string) {
		b.eval(fmt.Sprintf(`(() => { const i = document.getElementById('token'); i.value = %q; i.dispatchEvent(new Event('input')); return true })()`, tok))
	}
	click := func(label string) {
		b.eval(fmt.Sprintf(`(() => { [...%s.querySelectorAll('button')].find(x => x.textContent === %q).click(); return true })()`, row, label))
	}
	choose := func(stage, percent string) {
		b.eval(fmt.Sprintf(`(() => {
			const s = %s; s.value = %q; s.dispatchEvent(new Event('change'));
			const p = %s.querySelector('input[type=number]'); p.value = %q; p.dispatchEvent(new Event('input'));
			return true })()`, sel, stage, row, percent))
	}

	setToken(d.token)
	b.waitFor("the control enabled by the token", `!`+sel+`.disabled`)
	choose("canary", "30")
	click("Apply")
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	eventually("get-profile at canary 30", func() bool { return routeStage(t, d.admin, "get-profile") == "canary 30" })
	b.waitFor("the page showing canary 30%", row+`.querySelector('.stage').textContent === 'canary 30%'`)
	if msg := b.eval(`document.getElementById('auth-msg').textContent`); !strings.Contains(msg, "now canary 30%") {
		t.Errorf("message after Apply: %s", msg)
	}

	setToken("not-the-token")
	b.waitFor("the control still enabled", `!`+sel+`.disabled`)
	choose("nats", "30")
	click("Apply")
	b.waitFor("the refusal shown", `document.getElementById('auth-msg').className.includes('bad')`)
	if msg := b.eval(`document.getElementById('auth-msg').textContent`); !strings.Contains(msg, "Bearer token is required") {
		t.Errorf("message after a wrong token: %s, want the API's reason", msg)
	}
	if got := routeStage(t, d.admin, "get-profile"); got != "canary 30" {
		t.Errorf("after a refused change get-profile is %s, want canary 30", got)
	}

	setToken(d.token)
	click("Reset")
	eventually("get-profile back to legacy", func() bool { return strings.HasPrefix(routeStage(t, d.admin, "get-profile"), "legacy ") })
	b.waitFor("the page showing legacy", row+`.querySelector('.stage').textContent === 'legacy'`)
}
