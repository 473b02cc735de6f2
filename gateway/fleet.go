package gateway

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/buildinfo"
	"github.com/natsgate/natsgate/routes"
)

// The fleet: natsgate replicas on one NATS system share their dashboard
// windows, so that any replica's /admin/stats answers for all of them.
// Each replica publishes its window every fleetInterval on
// <fleet.subject_prefix>.stats.<replica id>, keeps the latest message of
// every other replica, and forgets one not heard for fleetStale. Counts
// and latency buckets add up exactly; quantiles are read from the summed
// buckets, never averaged.
const (
	fleetInterval = time.Second
	fleetStale    = 5 * time.Second
	// fleetMaxMessage bounds a stats message a replica accepts: a few
	// dozen busy routes take a few KiB, so this leaves room for hundreds.
	fleetMaxMessage = 256 << 10
	// fleetMaxRoutes bounds the routes one message may describe.
	fleetMaxRoutes = 4096
)

// fleetEncoding is the header that says a stats message is compressed:
// "deflate" (RFC 1951). A message without it is plain JSON.
const fleetEncoding = "Content-Encoding"

// deflate compresses a stats message with the fleet's one writer: a busy
// message shrinks several times, for a few hundred microseconds a second.
func (f *fleet) deflate(b []byte) []byte {
	f.zbuf.Reset()
	if f.zw == nil {
		f.zw, _ = flate.NewWriter(&f.zbuf, flate.BestSpeed)
	} else {
		f.zw.Reset(&f.zbuf)
	}
	_, _ = f.zw.Write(b)
	_ = f.zw.Close()
	return f.zbuf.Bytes()
}

// inflate returns a stats message's JSON, reading at most
// fleetMaxMessage+1 bytes of it, so that a small compressed message
// cannot expand without bound.
func inflate(m *nats.Msg) ([]byte, error) {
	switch enc := m.Header.Get(fleetEncoding); enc {
	case "":
		return m.Data, nil
	case "deflate":
		zr := flate.NewReader(bytes.NewReader(m.Data))
		defer zr.Close()
		b, err := io.ReadAll(io.LimitReader(zr, fleetMaxMessage+1))
		if err != nil {
			return nil, fmt.Errorf("%w: deflate: %v", errFleetMessage, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%w: encoding %q", errFleetMessage, clip(enc))
	}
}

// fleetMessage is what a replica publishes each second, as JSON,
// compressed.
type fleetMessage struct {
	ID         string `json:"id"`
	Version    string `json:"version"`
	ConfigHash string `json:"config_hash"`
	// Seconds the window covers (less than a minute for a young replica):
	// each replica's rates are its counts over its own seconds.
	Seconds float64      `json:"seconds"`
	Routes  []fleetRoute `json:"routes"`
	// Slot is the replica's last closed stats slot, numbered as
	// stats.epoch, and Closed its routes that answered in it, with edge
	// latency only: what the fleet history adds up.
	Slot   int64        `json:"slot,omitempty"`
	Closed []fleetRoute `json:"closed,omitempty"`
}

// fleetRoute is one route's window in a fleetMessage. Zero arrays are left
// out; Lat holds, per series, the non-zero buckets of the stats window's
// log-linear histogram as flat bucket, count pairs.
type fleetRoute struct {
	Name   string              `json:"name"`
	Stage  string              `json:"stage"`
	Req    []uint64            `json:"req,omitempty"`    // by backend: nats, legacy, none
	Err    []uint64            `json:"err,omitempty"`    // 5xx answers, by backend
	Shadow []uint64            `json:"shadow,omitempty"` // match, mismatch, error, dropped
	Lat    map[string][]uint64 `json:"lat,omitempty"`
}

// seriesNames name the window's latency series on the wire.
var seriesNames = [seriesCount]string{
	seriesEdgeNATS:   "edge_nats",
	seriesEdgeLegacy: "edge_legacy",
	seriesNATSHop:    "nats",
	seriesWorker:     "worker",
	seriesUpstream:   "upstream",
}

// encodeRoute writes a window in its wire form.
func encodeRoute(name, stage string, w *routeWindow) fleetRoute {
	fr := fleetRoute{Name: name, Stage: stage}
	if w.req != [slotBackends]uint64{} {
		fr.Req, fr.Err = w.req[:], w.errs[:]
	}
	if w.shadow != [shadowCount]uint64{} {
		fr.Shadow = w.shadow[:]
	}
	for j := range w.lat {
		var pairs []uint64
		for k, c := range w.lat[j] {
			if c > 0 {
				pairs = append(pairs, uint64(k), c)
			}
		}
		if pairs != nil {
			if fr.Lat == nil {
				fr.Lat = map[string][]uint64{}
			}
			fr.Lat[seriesNames[j]] = pairs
		}
	}
	return fr
}

// add merges another replica's window of the route into w: counts and
// buckets summed, rates summed (each over its replica's own seconds).
func (w *routeWindow) add(fr *fleetRoute, secs float64) {
	for b := range fr.Req {
		w.req[b] += fr.Req[b]
		w.rate[b] += float64(fr.Req[b]) / secs
	}
	for b := range fr.Err {
		w.errs[b] += fr.Err[b]
	}
	for j := range fr.Shadow {
		w.shadow[j] += fr.Shadow[j]
	}
	for j, name := range seriesNames {
		pairs := fr.Lat[name]
		for i := 0; i+1 < len(pairs); i += 2 {
			w.lat[j][pairs[i]] += pairs[i+1]
		}
	}
	w.secs = max(w.secs, secs)
}

// fleetMaxCount bounds one count in a message: a slot counts in uint32 and
// a window holds twelve slots. Larger is not a window natsgate sent.
const fleetMaxCount = statsSlots << 32

var errFleetMessage = errors.New("not a fleet stats message")

// decodeFleetMessage reads and checks a stats message. A message it cannot
// read, too large, or with a value no replica could have sent is refused
// whole: a replica never counts part of one.
func decodeFleetMessage(data []byte) (*fleetMessage, error) {
	if len(data) > fleetMaxMessage {
		return nil, fmt.Errorf("%w: %d bytes, over %d", errFleetMessage, len(data), fleetMaxMessage)
	}
	var m fleetMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errFleetMessage, err)
	}
	switch {
	case routes.CheckToken(m.ID) != nil || len(m.ID) > 128:
		return nil, fmt.Errorf("%w: bad id %q", errFleetMessage, clip(m.ID))
	case len(m.Version) > 128 || len(m.ConfigHash) > 128:
		return nil, fmt.Errorf("%w: version or config hash too long", errFleetMessage)
	case !(m.Seconds >= 1 && m.Seconds <= 2*StatsWindow.Seconds()):
		return nil, fmt.Errorf("%w: seconds %v", errFleetMessage, m.Seconds)
	case len(m.Routes) > fleetMaxRoutes:
		return nil, fmt.Errorf("%w: %d routes", errFleetMessage, len(m.Routes))
	}
	if err := checkFleetRoutes(m.Routes); err != nil {
		return nil, err
	}
	switch {
	case m.Slot < 0 || m.Slot == 0 && m.Closed != nil:
		return nil, fmt.Errorf("%w: slot %d", errFleetMessage, m.Slot)
	case len(m.Closed) > fleetMaxRoutes:
		return nil, fmt.Errorf("%w: %d closed routes", errFleetMessage, len(m.Closed))
	}
	if err := checkFleetRoutes(m.Closed); err != nil {
		return nil, err
	}
	return &m, nil
}

// checkFleetRoutes checks each route of a message and that none is there
// twice.
func checkFleetRoutes(rs []fleetRoute) error {
	seen := make(map[string]bool, len(rs))
	for i := range rs {
		if err := checkFleetRoute(&rs[i]); err != nil {
			return fmt.Errorf("%w: route %q: %v", errFleetMessage, clip(rs[i].Name), err)
		}
		if seen[rs[i].Name] {
			return fmt.Errorf("%w: route %q twice", errFleetMessage, clip(rs[i].Name))
		}
		seen[rs[i].Name] = true
	}
	return nil
}

func checkFleetRoute(fr *fleetRoute) error {
	if fr.Name == "" || len(fr.Name) > 256 {
		return errors.New("bad name")
	}
	if _, err := routes.ParseStage(fr.Stage); err != nil {
		return err
	}
	if len(fr.Req) > slotBackends || len(fr.Err) > len(fr.Req) || len(fr.Shadow) > shadowCount {
		return errors.New("too many counts")
	}
	for b, n := range fr.Req {
		if n > fleetMaxCount || fr.Err != nil && fr.Err[b] > n {
			return errors.New("bad request or error count")
		}
	}
	for _, n := range fr.Shadow {
		if n > fleetMaxCount {
			return errors.New("bad shadow count")
		}
	}
	for name, pairs := range fr.Lat {
		if !slices.Contains(seriesNames[:], name) {
			return fmt.Errorf("unknown latency series %q", clip(name))
		}
		if len(pairs)%2 != 0 || len(pairs) > 2*latencyBuckets {
			return fmt.Errorf("series %s: want bucket, count pairs", name)
		}
		for i := 0; i < len(pairs); i += 2 {
			if pairs[i] >= latencyBuckets || pairs[i+1] > fleetMaxCount {
				return fmt.Errorf("series %s: bad bucket %d or count %d", name, pairs[i], pairs[i+1])
			}
		}
	}
	return nil
}

// clip shortens a value quoted in a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// fleetPeer is another replica as last heard.
type fleetPeer struct {
	msg    *fleetMessage
	routes map[string]*fleetRoute
	seen   time.Time
}

// fleet publishes this replica's window and keeps the others'.
type fleet struct {
	s       *Server
	id      string
	subject string // where this replica publishes
	prefix  string // <fleet.subject_prefix>.stats.
	version string
	now     func() time.Time

	mu    sync.Mutex
	peers map[string]*fleetPeer

	hashMu    sync.Mutex
	hashTable *routes.Table
	hash      string

	// zw and zbuf compress each message; only the publishing goroutine
	// uses them.
	zw   *flate.Writer
	zbuf bytes.Buffer

	sub  *nats.Subscription
	stop chan struct{}
	done chan struct{}
}

// startFleet subscribes to the other replicas' windows and starts
// publishing this one's, when fleet.enabled. It runs once the public
// listener is bound, whose port names the replica by default.
func (s *Server) startFleet() error {
	s.metrics.FleetReplicas.Set(1)
	fc := s.cfg.Fleet
	if fc.Enabled != nil && !*fc.Enabled {
		return nil
	}
	prefix := fc.SubjectPrefix
	if prefix == "" {
		prefix = routes.DefaultFleetSubjectPrefix
	}
	id := fc.ReplicaID
	if id == "" {
		id = defaultReplicaID(s.publicLn.Addr())
	}
	f := &fleet{
		s: s, id: id, prefix: prefix + ".stats.", subject: prefix + ".stats." + id,
		version: buildinfo.Read().Version, now: time.Now, peers: map[string]*fleetPeer{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	sub, err := s.conn.nc.Subscribe(f.prefix+"*", f.receive)
	if err != nil {
		return fmt.Errorf("fleet: subscribing to %s*: %w", f.prefix, err)
	}
	// A replica publishes far more often than it is asked for its stats;
	// a slow reader must not make the server cut the connection.
	_ = sub.SetPendingLimits(1024, 4*fleetMaxMessage)
	// The server registers the subscription when it reads it; flushing
	// here means a replica that is up hears the fleet's next message. A
	// failed flush (the server away) is not fatal: the subscription is
	// sent again on reconnect.
	_ = s.conn.nc.FlushTimeout(time.Second)
	f.sub = sub
	s.fleet = f
	go f.run()
	return nil
}

// stopFleet stops publishing and listening. Shutdown calls it before the
// NATS connection drains, so nothing is published on a closing connection.
func (s *Server) stopFleet() {
	f := s.fleet
	if f == nil {
		return
	}
	select {
	case <-f.stop:
		return
	default:
	}
	close(f.stop)
	<-f.done
	_ = f.sub.Unsubscribe()
}

// defaultReplicaID is the host name and the public listener's port, like
// "web-3:8080"; dots in the host name become "_" so the id stays one
// subject token.
func defaultReplicaID(addr net.Addr) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "natsgate"
	}
	host = strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, host)
	port := "0"
	if addr != nil {
		if _, p, err := net.SplitHostPort(addr.String()); err == nil {
			port = p
		}
	}
	return host + ":" + port
}

// run publishes every fleetInterval until stopped. It reads the stats
// window only through the slots' atomics, so requests never wait on it.
func (f *fleet) run() {
	defer close(f.done)
	t := time.NewTicker(fleetInterval)
	defer t.Stop()
	f.publish()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.publish()
		}
	}
}

func (f *fleet) publish() {
	if f.s.feed != nil {
		// A slot closed since the feed's own tick goes out now, not on the
		// feed's next one: the others read it historySettle after it
		// closed, and two tickers' delays would add up past that.
		f.s.feedHistory()
	}
	b, err := json.Marshal(f.local())
	if err == nil {
		if len(b) > fleetMaxMessage {
			f.s.log.Warn("fleet: this replica's stats are too large for the others to accept", "bytes", len(b), "limit", fleetMaxMessage)
		} else if f.s.conn.nc.IsConnected() {
			m := &nats.Msg{Subject: f.subject, Header: nats.Header{fleetEncoding: []string{"deflate"}}, Data: f.deflate(b)}
			err = f.s.conn.nc.PublishMsg(m)
		}
	}
	if err != nil {
		f.s.log.Debug("fleet: publishing stats", "error", err)
	}
	f.live() // forgets the replicas gone quiet, and sets natsgate_fleet_replicas
}

// local is this replica's message: every served route's window and stage.
func (f *fleet) local() *fleetMessage {
	c := f.s.table.Load()
	m := &fleetMessage{ID: f.id, Version: f.version, ConfigHash: f.configHash(c.table), Routes: make([]fleetRoute, 0, len(c.table.Routes))}
	for _, rt := range c.table.Routes {
		w := f.s.stats.window(rt.Name)
		m.Seconds = w.secs
		m.Routes = append(m.Routes, encodeRoute(rt.Name, appliedStage(c, rt), w))
	}
	if m.Seconds == 0 {
		m.Seconds = 1
	}
	m.Slot, m.Closed = f.s.feed.last()
	return m
}

// appliedStage is the stage a route runs now, a run-time override included.
func appliedStage(c *compiled, rt *routes.Route) string {
	if h := c.handlers[rt.Name]; h != nil {
		if st := h.stage.Load(); st != nil {
			return string(st.stage)
		}
	}
	return string(rt.Cutover)
}

// receive keeps another replica's latest message. What it cannot decode,
// what claims an id other than its subject's, and this replica's own
// messages are ignored.
func (f *fleet) receive(m *nats.Msg) {
	id, ok := strings.CutPrefix(m.Subject, f.prefix)
	if !ok || id == f.id {
		return
	}
	data, err := inflate(m)
	var msg *fleetMessage
	if err == nil {
		msg, err = decodeFleetMessage(data)
	}
	if err == nil && msg.ID != id {
		err = fmt.Errorf("%w: id %q on the subject of %q", errFleetMessage, clip(msg.ID), clip(id))
	}
	if err != nil {
		f.s.log.Debug("fleet: ignoring a stats message", "subject", clip(m.Subject), "error", err)
		return
	}
	p := &fleetPeer{msg: msg, routes: make(map[string]*fleetRoute, len(msg.Routes)), seen: f.now()}
	for i := range msg.Routes {
		p.routes[msg.Routes[i].Name] = &msg.Routes[i]
	}
	if msg.Slot != 0 {
		f.s.history.add(id, msg.Slot, servedOnly(f.s.table.Load(), msg.Closed))
	}
	msg.Closed = nil // counted; the peer is kept for its window alone
	f.mu.Lock()
	_, known := f.peers[id]
	f.peers[id] = p
	n := len(f.peers)
	f.mu.Unlock()
	if !known { // at once, not at the next tick; a tick also counts the ones gone
		f.s.metrics.FleetReplicas.Set(float64(1 + n))
	}
}

// servedOnly keeps the routes c serves: the history charts and judges
// only those, so a peer naming thousands of others (another config, or a
// hostile client) costs it no memory.
func servedOnly(c *compiled, rs []fleetRoute) []fleetRoute {
	out := make([]fleetRoute, 0, min(len(rs), len(c.handlers)))
	for _, fr := range rs {
		if c.handlers[fr.Name] != nil {
			out = append(out, fr)
		}
	}
	return out
}

// live returns the other replicas heard within fleetStale, by id, forgets
// the rest, and sets natsgate_fleet_replicas to match.
func (f *fleet) live() []*fleetPeer {
	cutoff := f.now().Add(-fleetStale)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*fleetPeer, 0, len(f.peers))
	for id, p := range f.peers {
		if p.seen.Before(cutoff) {
			delete(f.peers, id)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *fleetPeer) int { return strings.Compare(a.msg.ID, b.msg.ID) })
	f.s.metrics.FleetReplicas.Set(float64(1 + len(out)))
	return out
}

// configHash is a stable hash of the compiled route table's meaningful
// fields (see routeTableHash), computed once per table.
func (f *fleet) configHash(t *routes.Table) string {
	f.hashMu.Lock()
	defer f.hashMu.Unlock()
	if f.hashTable != t {
		f.hashTable, f.hash = t, routeTableHash(t)
	}
	return f.hash
}

// routeTableHash hashes what a route does, in file order: method, path,
// NATS side, upstream, cutover and limits. Where a route was written
// (file:line) is left out, so a comment added above it is not drift.
// Listener and NATS settings are left out too: they differ per replica
// by design.
func routeTableHash(t *routes.Table) string {
	type upstream struct {
		Name, URL string
		Timeout   time.Duration
		Breaker   routes.Breaker
	}
	type route struct {
		Name, Method, Path, Subject string
		Pattern                     routes.Pattern
		Timeout                     time.Duration
		MaxBody                     int64
		MaxSubject                  int
		ForwardHeaders              []string
		Upstream                    *upstream
		Cutover                     routes.Stage
		CanaryPercent               int
		CanaryKey                   string
		Fallback                    bool
		Breaker                     routes.Breaker
		ShadowUnsafe                bool
		ShadowIgnore                [][]string
	}
	list := make([]route, 0, len(t.Routes))
	for _, r := range t.Routes {
		rt := route{Name: r.Name, Method: r.Method, Path: r.Path, Pattern: r.Pattern, Timeout: r.Timeout,
			MaxBody: r.MaxBody, MaxSubject: r.MaxSubject, ForwardHeaders: r.ForwardHeaders, Cutover: r.Cutover,
			CanaryPercent: r.CanaryPercent, CanaryKey: r.CanaryKey, Fallback: r.Fallback, Breaker: r.Breaker,
			ShadowUnsafe: r.ShadowUnsafe, ShadowIgnore: r.ShadowIgnore}
		if r.Subject != nil {
			rt.Subject = r.Subject.String()
		}
		if u := r.Upstream; u != nil {
			rt.Upstream = &upstream{Name: u.Name, URL: u.URL.String(), Timeout: u.Timeout, Breaker: u.Breaker}
		}
		list = append(list, rt)
	}
	b, _ := json.Marshal(list) // plain values: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// fleetStats is /admin/stats for the fleet: this replica's window plus
// every live replica's, route by route, for the routes this replica
// serves. A route only other replicas serve is not shown (their config
// differs: see /admin/fleet's drift).
func (s *Server) fleetStats() StatsSnapshot {
	peers := s.fleet.live()
	snap := s.statsSnapshot(func(name string, w *routeWindow) {
		for _, p := range peers {
			if fr := p.routes[name]; fr != nil {
				w.add(fr, p.msg.Seconds)
			}
		}
	})
	snap.Scope, snap.Replicas = "fleet", 1+len(peers)
	return snap
}

// FleetStatus is what GET /admin/fleet serves.
type FleetStatus struct {
	// Leader is the elected leader's replica id as this replica last read
	// it (every third of fleet.leader_ttl), "" when there is none or the
	// election bucket cannot be read.
	Leader   string         `json:"leader"`
	Replicas []FleetReplica `json:"replicas"`
	// Drift lists replicas whose route config or applied stages differ
	// from the majority's.
	Drift []FleetDrift `json:"drift"`
}

// FleetReplica is one replica as this one last heard it.
type FleetReplica struct {
	ID         string            `json:"id"`
	Version    string            `json:"version"`
	ConfigHash string            `json:"config_hash"`
	LastSeen   time.Time         `json:"last_seen"`
	Leader     bool              `json:"leader"` // ID is FleetStatus.Leader
	Stages     map[string]string `json:"stages"`
}

// FleetDrift names a replica that differs from the majority, and how.
type FleetDrift struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// FleetStatus lists the replicas heard within the last 5s, this one
// included, and which of them drift from the majority.
func (s *Server) FleetStatus() FleetStatus {
	var self *fleetMessage
	var peers []*fleetPeer
	now := time.Now()
	if s.fleet != nil {
		self, peers = s.fleet.local(), s.fleet.live()
		now = s.fleet.now()
	} else {
		f := &fleet{s: s, id: defaultReplicaID(nil), version: buildinfo.Read().Version}
		if s.cfg.Fleet.ReplicaID != "" {
			f.id = s.cfg.Fleet.ReplicaID
		} else if s.publicLn != nil {
			f.id = defaultReplicaID(s.publicLn.Addr())
		}
		self = f.local()
	}
	st := FleetStatus{Leader: s.leaderID(), Replicas: []FleetReplica{fleetReplica(self, now.UTC())}, Drift: []FleetDrift{}}
	for _, p := range peers {
		st.Replicas = append(st.Replicas, fleetReplica(p.msg, p.seen.UTC()))
	}
	for i := range st.Replicas {
		st.Replicas[i].Leader = st.Leader != "" && st.Replicas[i].ID == st.Leader
	}
	st.Drift = drift(st.Replicas)
	return st
}

func fleetReplica(m *fleetMessage, seen time.Time) FleetReplica {
	r := FleetReplica{ID: m.ID, Version: m.Version, ConfigHash: m.ConfigHash, LastSeen: seen.Truncate(time.Millisecond), Stages: make(map[string]string, len(m.Routes))}
	for _, rt := range m.Routes {
		r.Stages[rt.Name] = rt.Stage
	}
	return r
}

// drift finds the replicas that differ from the majority: in config hash,
// or in the stage a route applies (among the replicas that serve it). A
// value held by more replicas than any other is the majority's; on a tie
// there is none, and every replica is listed, since none can be told to
// be the odd one out.
func drift(reps []FleetReplica) []FleetDrift {
	reasons := map[string][]string{}
	hashes := make([]string, len(reps))
	for i, r := range reps {
		hashes[i] = r.ConfigHash
	}
	if maj, ok := majority(hashes); !ok {
		for _, r := range reps {
			reasons[r.ID] = append(reasons[r.ID], fmt.Sprintf("config hash %s: no majority among %d replicas", r.ConfigHash, len(reps)))
		}
	} else {
		for _, r := range reps {
			if r.ConfigHash != maj {
				reasons[r.ID] = append(reasons[r.ID], fmt.Sprintf("config hash %s, the majority's is %s", r.ConfigHash, maj))
			}
		}
	}
	// A set, not a list searched for each name: replicas may name
	// thousands of routes each.
	seen := map[string]bool{}
	var names []string
	for _, r := range reps {
		for name := range r.Stages {
			if !seen[name] {
				seen[name] = true
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	for _, name := range names {
		var stages []string
		for _, r := range reps {
			if st, ok := r.Stages[name]; ok {
				stages = append(stages, st)
			}
		}
		maj, ok := majority(stages)
		for _, r := range reps {
			st, has := r.Stages[name]
			switch {
			case !has:
			case !ok:
				reasons[r.ID] = append(reasons[r.ID], fmt.Sprintf("route %s: stage %s, no majority", name, st))
			case st != maj:
				reasons[r.ID] = append(reasons[r.ID], fmt.Sprintf("route %s: stage %s, the majority's is %s", name, st, maj))
			}
		}
	}
	out := []FleetDrift{}
	for _, r := range reps {
		if rs := reasons[r.ID]; len(rs) > 0 {
			out = append(out, FleetDrift{ID: r.ID, Reason: strings.Join(rs, "; ")})
		}
	}
	return out
}

// majority is the value held more often than any other, if one is.
func majority(vals []string) (string, bool) {
	count := map[string]int{}
	for _, v := range vals {
		count[v]++
	}
	best, n, tie := "", 0, false
	for v, c := range count {
		switch {
		case c > n:
			best, n, tie = v, c, false
		case c == n:
			tie = true
		}
	}
	return best, !tie && n > 0
}

func (s *Server) getFleet(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.FleetStatus())
}
