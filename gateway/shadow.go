package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/metrics"
	"github.com/natsgate/natsgate/wire"
)

// compareLimit bounds how much of each answer a shadow comparison keeps.
// An answer larger than this is compared as an error, not guessed at.
const compareLimit = 1 << 20

// mismatchKeep is how many recent mismatches each route remembers, and
// mismatchBody how much of each side's body a record keeps.
const (
	mismatchKeep = 20
	mismatchBody = 2048
)

// Mismatch is one shadow comparison that differed, as GET
// /admin/routes/{name}/mismatches shows it.
type Mismatch struct {
	At        time.Time `json:"at"`
	RequestID string    `json:"request_id"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Reason    string    `json:"reason"`
	Legacy    Answer    `json:"legacy"`
	NATS      Answer    `json:"nats"`
}

// Answer is one side of a shadow comparison, its body truncated.
type Answer struct {
	Status    int    `json:"status"`
	Body      string `json:"body"`
	Truncated bool   `json:"truncated,omitempty"`
}

// mismatches keeps the last few mismatches of each route.
type mismatches struct {
	mu     sync.Mutex
	byName map[string][]Mismatch
}

func (m *mismatches) add(route string, mm Mismatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := append(m.byName[route], mm)
	if len(list) > mismatchKeep {
		list = list[len(list)-mismatchKeep:]
	}
	m.byName[route] = list
}

func (m *mismatches) list(route string) []Mismatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Mismatch, len(m.byName[route]))
	copy(out, m.byName[route])
	return out
}

// capture keeps up to limit bytes of what passes through it.
type capture struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

func (c *capture) Write(p []byte) (int, error) {
	if room := c.limit - c.buf.Len(); room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// shadowBody is a shadowed request's body on its way to the upstream,
// kept as the proxy reads it, for the copy. The proxy's transport reads
// the body on a goroutine of its own, and may go on reading it after the
// upstream answered (an upstream that answers before it has read the
// body): the copy takes what was kept only once sealed, and only when it
// is the whole body.
type shadowBody struct {
	io.ReadCloser
	declared int64 // the request's Content-Length, -1 when unknown

	mu     sync.Mutex
	kept   capture
	eof    bool // read to its end
	sealed bool // the copy took it: nothing more is kept
}

func (b *shadowBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	if !b.sealed {
		_, _ = b.kept.Write(p[:n])
		b.eof = b.eof || err == io.EOF
	}
	b.mu.Unlock()
	return n, err
}

// seal stops keeping what is read from now on and returns what was kept,
// and whether that is the request's whole body: read to its end, or to
// its declared length (the upstream may answer once it has every byte,
// before the transport reads the end; an HTTP/2 request that ended with
// its headers declares 0 and is never read at all), and within the copy's
// limit.
func (b *shadowBody) seal() (body *capture, whole bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sealed = true
	all := b.eof || b.declared >= 0 && int64(b.kept.buf.Len()) == b.declared
	return &b.kept, all && !b.kept.truncated
}

// shadowable reports whether a request may be copied to NATS: only GET and
// HEAD, unless the route opts in with shadow_unsafe.
func (h *routeHandler) shadowable(r *http.Request) bool {
	return h.rt.ShadowUnsafe || r.Method == http.MethodGet || r.Method == http.MethodHead
}

// serveShadow lets the upstream answer the client, then sends NATS a copy
// in the background and compares the two answers. The copy is never on
// the client's path: it starts after the legacy answer is written, and
// when too many copies are in flight it is dropped and counted.
func (h *routeHandler) serveShadow(w *statusWriter, r *http.Request, ex *exchange) error {
	if !h.shadowable(r) {
		return h.legacy.serve(w, r, ex)
	}
	// The request's body and the answer's are kept as they pass, for the
	// copy and the comparison; the answer's in the copy's pooled job.
	c := shadowJobs.Get().(*shadowJob)
	c.answer.limit = compareLimit
	var reqBody *shadowBody
	if r.Body != nil && r.Body != http.NoBody {
		reqBody = &shadowBody{ReadCloser: r.Body, declared: r.ContentLength, kept: capture{limit: int(h.rt.MaxBody)}}
		r.Body = reqBody
	}
	w.capture = &c.answer
	err := h.legacy.serve(w, r, ex)
	w.capture = nil // nothing written from here on is the legacy answer's
	var kept *capture
	whole := true
	if reqBody != nil {
		kept, whole = reqBody.seal() // before the error return: the transport may still be reading
	}
	if err != nil {
		c.release()
		return err // no legacy answer: nothing to compare against
	}
	// The client's answer leaves now, before the copy starts: it would
	// otherwise wait in the connection's buffer for the handler to return,
	// behind the copy's work on the same CPUs.
	w.Flush()

	gw := h.gw
	select {
	case gw.shadowSem <- struct{}{}:
	default:
		c.release()
		gw.shadowResult(h.rt.Name, metrics.ShadowDropped)
		return nil
	}
	ex.shadowed = true
	// Only now, with the client answered, is the copy made, from the
	// request that is still the handler's (the proxy sent a clone of it):
	// its parameters and headers cost the client's answer nothing.
	c.h, c.reqID, c.method, c.path, c.reqBody, c.partBody = h, ex.reqID, r.Method, r.URL.EscapedPath(), kept, !whole
	c.legacy = Answer{Status: w.status, Truncated: c.answer.truncated}
	c.names, c.values, c.perr = pathParams(r, ex.route, h.rt.Params, c.out.params[:])
	if c.perr == nil {
		c.out.msg.Header = natsHeaders.Get().(nats.Header)
		one := c.out.values[:]
		if need := 5 + len(c.names); need > len(one) {
			one = make([]string, need)
		}
		fillRequestHeader(c.out.msg.Header, one, h.rt, r, ex.reqID, c.names, c.values)
		c.out.msg.Header[HeaderShadow] = shadowTrue
	}
	go c.run()
	return nil
}

// shadowTrue is the Http-Shadow value of every copy, shared.
var shadowTrue = []string{wire.ShadowValue}

// shadowJob is one shadow copy, made on the request's goroutine once the
// client is answered and run on its own: what the copy sends and what its
// answer is compared against. Jobs are pooled, the legacy answer's buffer
// with them, so that a copy costs the client's path no allocation of its
// own (see shadowJobs).
type shadowJob struct {
	h       *routeHandler
	reqID   string
	method  string
	path    string
	reqBody *capture // nil without a body
	// partBody: the upstream answered before the whole body was read (or
	// it was over the limit), so there is no whole body to copy.
	partBody bool
	answer   capture // the legacy answer's body, as it was written
	legacy   Answer
	names    []string
	values   []string
	perr     error // the path parameters' error, if any
	out      outbound
}

// shadowJobs are the shadow copies' jobs, reused. A job is the copy's
// alone from the handler's go statement to the end of its run; nothing
// keeps a reference into it after (a mismatch record copies the bodies).
// A job whose answer buffer grew past bodyPoolKeep is left to the
// garbage collector.
var shadowJobs = sync.Pool{New: func() any { return new(shadowJob) }}

// release empties the job and returns it to shadowJobs.
func (c *shadowJob) release() {
	c.out.releaseHeader()
	if c.answer.buf.Cap() > bodyPoolKeep {
		return
	}
	buf := c.answer.buf
	buf.Reset()
	*c = shadowJob{answer: capture{buf: buf}}
	shadowJobs.Put(c)
}

// run sends the copy, compares its answer with the legacy one and counts
// the outcome, giving the shadow slot back at the end.
func (c *shadowJob) run() {
	h := c.h
	gw := h.gw
	defer func() { <-gw.shadowSem }()
	defer c.release()
	var body []byte
	if c.reqBody != nil {
		if c.partBody {
			gw.shadowResult(h.rt.Name, metrics.ShadowError)
			return
		}
		body = c.reqBody.buf.Bytes()
	}
	if c.perr != nil {
		gw.shadowResult(h.rt.Name, metrics.ShadowError)
		return
	}
	nats, err := h.shadowCopy(c, body)
	if err != nil {
		rec := c.record("the NATS copy failed: " + err.Error())
		gw.shadowResult(h.rt.Name, metrics.ShadowError)
		gw.mismatches.add(h.rt.Name, rec)
		return
	}
	if c.legacy.Truncated {
		gw.shadowResult(h.rt.Name, metrics.ShadowError)
		return
	}
	reason := compareAnswers(c.legacy.Status, c.answer.buf.Bytes(), nats.status, nats.body, h.rt.ShadowIgnore)
	if reason == "" {
		gw.shadowResult(h.rt.Name, metrics.ShadowMatch)
		return
	}
	rec := c.record(reason)
	rec.NATS = truncate(Answer{Status: nats.status}, nats.body)
	gw.mismatches.add(h.rt.Name, rec)
	gw.shadowResult(h.rt.Name, metrics.ShadowMismatch)
}

// record is the mismatch record of the copy, with the legacy answer.
func (c *shadowJob) record(reason string) Mismatch {
	return Mismatch{At: time.Now().UTC(), RequestID: c.reqID, Method: c.method, Path: c.path, Reason: reason, Legacy: truncate(c.legacy, c.answer.buf.Bytes())}
}

// shadowCopy sends the copy and maps its reply like any other. The worker
// sees Http-Shadow: true, so it can skip side effects.
func (h *routeHandler) shadowCopy(c *shadowJob, body []byte) (reply, error) {
	subject, err := h.rt.Subject.Render(c.names, c.values, h.rt.MaxSubject)
	if err != nil {
		return reply{}, err
	}
	conn := h.nats.conn
	epoch := conn.epoch.Load()
	if !conn.nc.IsConnected() || epoch.Err() != nil {
		return reply{}, ErrDisconnected
	}
	msg := &c.out.msg
	msg.Subject, msg.Data = subject, body
	t0 := time.Now()
	// The copy is the gateway's own: no client waits on it or can end it.
	resp, err := conn.replies.request(msg, nil, h.rt.Timeout)
	hop := time.Since(t0)
	c.out.releaseHeader() // sent: the map is free again
	h.m.NATS.Observe(hop.Seconds())
	if err != nil {
		return reply{}, err
	}
	rep := mapReply(resp)
	h.gw.stats.hops(h.rt.Name, hop, rep.workerTime) // the dashboard's NATS side during shadow
	if rep.workerTime >= 0 {
		h.m.Worker.Observe(rep.workerTime.Seconds())
	}
	if rep.workerErr != nil {
		rep.body = nil
	}
	return rep, nil
}

// compareAnswers says how two answers differ, or "" when they match. The
// status must be equal; bodies are compared for answers below 400 only
// (error bodies differ in form by nature). Two JSON bodies are compared as
// data, so key order and white space do not count, with ignored fields
// removed first; other bodies byte for byte. For JSON the reason names
// where the data differs (see jsonDiff), so an operator reading the
// mismatch list sees the field at once. It runs in the shadow copy's own
// goroutine, never on the client's path.
func compareAnswers(legacyStatus int, legacyBody []byte, natsStatus int, natsBody []byte, ignore [][]string) string {
	if legacyStatus != natsStatus {
		return fmt.Sprintf("status: legacy %d, nats %d", legacyStatus, natsStatus)
	}
	if legacyStatus >= 400 {
		return ""
	}
	if bytes.Equal(legacyBody, natsBody) {
		return "" // the same bytes are the same data, whatever is ignored
	}
	var a, b any
	if json.Unmarshal(legacyBody, &a) == nil && json.Unmarshal(natsBody, &b) == nil {
		for _, path := range ignore {
			a, b = dropField(a, path), dropField(b, path)
		}
		if reflect.DeepEqual(a, b) {
			return ""
		}
		return "body: JSON differs at " + jsonDiff(a, b)
	}
	if bytes.Equal(legacyBody, natsBody) {
		return ""
	}
	return "body: bytes differ"
}

// diffListed is how many differing fields a mismatch reason names, and
// diffValue how many bytes of each value it quotes: enough to recognise
// the field and the values, and a reason stays one short line.
const (
	diffListed = 3
	diffValue  = 48
)

// jsonDiff describes where two decoded JSON values differ: the JSON
// pointers (RFC 6901) of the first diffListed differing fields, object
// keys in sorted order and array elements by index, each with both values
// ("absent" for a side that lacks the field), then how many more differ:
// `/a/b/0: legacy 1, nats 7; /c: legacy absent, nats "x"; and 2 more`.
// The whole document is the pointer "".
func jsonDiff(legacy, nats any) string {
	var d jsonDiffs
	d.walk("", legacy, nats, true, true)
	if len(d.listed) == 0 {
		return "an unknown place" // not reached: called only for values that differ
	}
	s := strings.Join(d.listed, "; ")
	if d.more > 0 {
		s += fmt.Sprintf("; and %d more", d.more)
	}
	return s
}

// jsonDiffs collects the differences jsonDiff reports.
type jsonDiffs struct {
	listed []string
	more   int
}

// walk compares a and b at pointer ptr; hasA and hasB say whether each
// side has the field at all.
func (d *jsonDiffs) walk(ptr string, a, b any, hasA, hasB bool) {
	if hasA && hasB {
		switch ta := a.(type) {
		case map[string]any:
			if tb, ok := b.(map[string]any); ok {
				keys := make([]string, 0, len(ta)+len(tb))
				for k := range ta {
					keys = append(keys, k)
				}
				for k := range tb {
					if _, ok := ta[k]; !ok {
						keys = append(keys, k)
					}
				}
				sort.Strings(keys)
				for _, k := range keys {
					va, okA := ta[k]
					vb, okB := tb[k]
					d.walk(ptr+"/"+pointerToken(k), va, vb, okA, okB)
				}
				return
			}
		case []any:
			if tb, ok := b.([]any); ok {
				for i := 0; i < max(len(ta), len(tb)); i++ {
					d.walk(ptr+"/"+strconv.Itoa(i), index(ta, i), index(tb, i), i < len(ta), i < len(tb))
				}
				return
			}
		}
		if reflect.DeepEqual(a, b) {
			return
		}
	}
	if len(d.listed) == diffListed {
		d.more++
		return
	}
	where := ptr
	if where == "" {
		where = `""`
	}
	d.listed = append(d.listed, where+": legacy "+diffQuote(a, hasA)+", nats "+diffQuote(b, hasB))
}

// index is s[i], or nil past its end.
func index(s []any, i int) any {
	if i < len(s) {
		return s[i]
	}
	return nil
}

// pointerToken escapes an object key for a JSON pointer: "~" as "~0",
// "/" as "~1".
func pointerToken(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}

// diffQuote is a value as JSON, clipped to diffValue bytes (on a rune
// boundary, marked "…"), or "absent" for a side without the field.
func diffQuote(v any, present bool) string {
	if !present {
		return "absent"
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // quote "<a>" as written, not as "\u003ca\u003e"
	if enc.Encode(v) != nil {
		return "?"
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) <= diffValue {
		return string(b)
	}
	cut := diffValue
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return string(b[:cut]) + "…"
}

// dropField removes a dotted field path from decoded JSON; in arrays it
// applies to every element.
func dropField(v any, path []string) any {
	if len(path) == 0 {
		return v
	}
	switch t := v.(type) {
	case map[string]any:
		if len(path) == 1 {
			delete(t, path[0])
		} else if child, ok := t[path[0]]; ok {
			t[path[0]] = dropField(child, path[1:])
		}
	case []any:
		for i := range t {
			t[i] = dropField(t[i], path)
		}
	}
	return v
}

func truncate(a Answer, body []byte) Answer {
	if len(body) > mismatchBody {
		body, a.Truncated = body[:mismatchBody], true
	}
	a.Body = string(body)
	return a
}

// shadowResult counts a shadow outcome. Every outcome passes here.
func (s *Server) shadowResult(route, result string) {
	s.metrics.ShadowComparisons.WithLabelValues(route, result).Inc()
	s.stats.shadow(route, result)
}

// Mismatches returns a route's recent shadow mismatches, oldest first.
func (s *Server) Mismatches(route string) []Mismatch { return s.mismatches.list(route) }
