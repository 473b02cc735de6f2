package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/natsgate/natsgate/routes"
)

// Discovery finds the workers that answer natsgate's routes by reading the
// NATS micro services on the system: every instance answers $SRV.INFO with
// its name, version, id and endpoints. A plain subscriber that is not a
// micro service cannot be seen this way, and natsgate never sends a worker
// a real request to find out: a route served only by plain subscribers
// shows a count of 0.
const (
	// discoveryWait bounds one look: instances answer $SRV.INFO at once,
	// so the look ends discoveryQuiet after the last answer, or at
	// discoveryWait however many keep coming.
	discoveryWait  = 500 * time.Millisecond
	discoveryQuiet = 100 * time.Millisecond
	// discoveryMaxInfos bounds the answers one look keeps.
	discoveryMaxInfos = 10000
	// responderKind says how responders were found, in the admin output.
	responderKind = "micro"
)

// Metadata keys by which a micro endpoint claims a route.
const (
	ClaimRoute  = "natsgate.route"
	ClaimMethod = "http.method"
	ClaimPath   = "http.path"
)

// Responders is what discovery found serving a route at its last look.
type Responders struct {
	// Kind is how they were found: "micro", NATS micro services only.
	Kind      string    `json:"kind"`
	CheckedAt time.Time `json:"checked_at"`
	// Count is the number of service instances with an endpoint whose
	// subject covers the route's; 0: none found.
	Count    int                `json:"count"`
	Services []ResponderService `json:"services"`
}

// ResponderService is one service name and version serving a route
// through one of its endpoints.
type ResponderService struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Instances int    `json:"instances"`
	Endpoint  string `json:"endpoint"`
	Subject   string `json:"subject"`
}

// DiscoveredClaim is an endpoint whose metadata claims a route the config
// does not have: discovered, not routed.
type DiscoveredClaim struct {
	Kind      string `json:"kind"`
	Service   string `json:"service"`
	Version   string `json:"version"`
	Instances int    `json:"instances"`
	Endpoint  string `json:"endpoint"`
	Subject   string `json:"subject"`
	// Route, Method and Path are the claim as the metadata wrote it.
	Route  string `json:"route,omitempty"`
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
	// Reason says why no configured route takes the claim.
	Reason string `json:"reason"`
	// Suggested is a route entry for the config that would serve it.
	Suggested SuggestedRoute `json:"suggested_route"`
}

// SuggestedRoute is a routes entry, with the config file's field names.
type SuggestedRoute struct {
	Name   string `json:"name"`
	Method string `json:"method"`
	Path   string `json:"path"`
	NATS   struct {
		Subject string `json:"subject"`
		Pattern string `json:"pattern"`
	} `json:"nats"`
	// Note says what to check before using it, when it is only a guess.
	Note string `json:"note,omitempty"`
}

// discoveryResult is one completed look.
type discoveryResult struct {
	at      time.Time
	byRoute map[string]*Responders
	claims  []DiscoveredClaim
}

// discovery is the loop that looks every discovery.interval and holds the
// last result in memory.
type discovery struct {
	s        *Server
	interval time.Duration

	mu       sync.Mutex
	last     *discoveryResult
	labelled map[string]bool // routes with a natsgate_route_responders series

	stop, done chan struct{}
}

// startDiscovery looks at once and then every discovery.interval, in the
// background; with discovery.enabled false it does nothing.
func (s *Server) startDiscovery() {
	dc := s.cfg.Discovery
	if dc.Enabled != nil && !*dc.Enabled {
		return
	}
	iv := time.Duration(dc.Interval)
	if iv <= 0 {
		iv = routes.DefaultDiscoveryInterval
	}
	d := &discovery{s: s, interval: iv, labelled: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	s.discovery = d
	go d.run()
}

// stopDiscovery ends the loop, waiting for a look under way (at most
// discoveryWait).
func (s *Server) stopDiscovery() {
	d := s.discovery
	if d == nil {
		return
	}
	select {
	case <-d.stop:
		return
	default:
	}
	close(d.stop)
	<-d.done
}

func (d *discovery) run() {
	defer close(d.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-d.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		d.look(ctx)
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
	}
}

// look asks the system once and keeps the result; a look that cannot ask
// (NATS down) keeps the last result.
func (d *discovery) look(ctx context.Context) {
	infos, err := fetchInfos(ctx, d.s.conn.nc, discoveryWait, discoveryQuiet)
	if err != nil {
		if ctx.Err() == nil {
			d.s.log.Warn("discovery: cannot read the NATS micro services; keeping the last result", "error", err)
		}
		return
	}
	t := d.s.Table()
	res := matchResponders(t, infos, time.Now().UTC())
	d.mu.Lock()
	d.last = res
	seen := map[string]bool{}
	for name, r := range res.byRoute {
		d.s.metrics.RouteResponders.WithLabelValues(name).Set(float64(r.Count))
		seen[name] = true
	}
	for name := range d.labelled {
		if !seen[name] { // a route a reload took away
			d.s.metrics.RouteResponders.DeleteLabelValues(name)
		}
	}
	d.labelled = seen
	d.mu.Unlock()
}

// result is the last completed look, or nil.
func (d *discovery) result() *discoveryResult {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// responders is what the last look found for a route: nil when discovery
// is off, has not completed a look yet, or the route has no NATS side.
func (s *Server) responders(route string) *Responders {
	if r := s.discovery.result(); r != nil {
		return r.byRoute[route]
	}
	return nil
}

// noResponders reports why a move of a route to canary or nats must be
// refused: no micro service answers its subject. Only request routes need
// a responder (a publish or jetstream route's subject may have a stream or
// nobody behind it), and only a completed look that found none refuses: a
// route never looked at is let through. A last look that found none is
// taken again first (at most discoveryWait), so a worker started since is
// not refused for up to discovery.interval.
func (s *Server) noResponders(ctx context.Context, rt *routes.Route) (string, bool) {
	if !rt.HasNATS() || rt.Pattern != routes.Request {
		return "", false
	}
	r := s.responders(rt.Name)
	if r == nil || r.Count > 0 {
		return "", false
	}
	s.discovery.look(ctx)
	if r = s.responders(rt.Name); r == nil || r.Count > 0 {
		return "", false
	}
	return fmt.Sprintf("no NATS micro service answers %s (discovery looked at %s); plain subscribers cannot be seen: start a micro service worker, or send \"force\": true to move anyway",
		rt.Subject, r.CheckedAt.Format(time.RFC3339)), true
}

// fetchInfos asks every micro service instance for its info: one publish
// of $SRV.INFO with a fresh inbox as its reply subject, and the answers
// collected until quiet after the last one, or wait. No instance
// answering is not an error: it is an empty list.
func fetchInfos(ctx context.Context, nc *nats.Conn, wait, quiet time.Duration) ([]micro.Info, error) {
	subject, err := micro.ControlSubject(micro.InfoVerb, "", "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	ch := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	end := time.NewTimer(wait)
	defer end.Stop()
	var q <-chan time.Time
	var infos []micro.Info
	ids := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-end.C:
			return infos, nil
		case <-q:
			return infos, nil
		case m := <-ch:
			q = time.After(quiet)
			var info micro.Info
			if json.Unmarshal(m.Data, &info) != nil || info.Name == "" || info.ID == "" || ids[info.ID] {
				continue // not a micro info answer, or one instance twice
			}
			if len(infos) < discoveryMaxInfos {
				ids[info.ID] = true
				infos = append(infos, info)
			}
		}
	}
}

// matchResponders finds, for each route with a NATS side, the endpoints
// whose subject covers its subject, and the claims for routes the table
// does not have.
func matchResponders(t *routes.Table, infos []micro.Info, at time.Time) *discoveryResult {
	type key struct{ name, version, endpoint, subject string }
	res := &discoveryResult{at: at, byRoute: map[string]*Responders{}}
	for _, rt := range t.Routes {
		if !rt.HasNATS() {
			continue
		}
		instances := map[key]map[string]bool{}
		all := map[string]bool{}
		for _, in := range infos {
			for _, ep := range in.Endpoints {
				if !rt.Subject.CoveredBy(ep.Subject) {
					continue
				}
				k := key{in.Name, in.Version, ep.Name, ep.Subject}
				if instances[k] == nil {
					instances[k] = map[string]bool{}
				}
				instances[k][in.ID] = true
				all[in.ID] = true
			}
		}
		r := &Responders{Kind: responderKind, CheckedAt: at, Count: len(all), Services: []ResponderService{}}
		for k, ids := range instances {
			r.Services = append(r.Services, ResponderService{Name: k.name, Version: k.version, Instances: len(ids), Endpoint: k.endpoint, Subject: k.subject})
		}
		slices.SortFunc(r.Services, func(a, b ResponderService) int {
			return strings.Compare(a.Name+"\x00"+a.Version+"\x00"+a.Endpoint, b.Name+"\x00"+b.Version+"\x00"+b.Endpoint)
		})
		res.byRoute[rt.Name] = r
	}
	res.claims = unroutedClaims(t, infos)
	return res
}

// unroutedClaims lists the endpoints whose metadata claims a route
// (natsgate.route, or http.method and http.path) that the table does not
// have, one entry per service, version and endpoint.
func unroutedClaims(t *routes.Table, infos []micro.Info) []DiscoveredClaim {
	byKey := map[string]*DiscoveredClaim{}
	ids := map[string]map[string]bool{}
	var order []string
	for _, in := range infos {
		for _, ep := range in.Endpoints {
			name, method, path := ep.Metadata[ClaimRoute], strings.ToUpper(ep.Metadata[ClaimMethod]), ep.Metadata[ClaimPath]
			var reason string
			switch {
			case name != "":
				if t.Route(name) != nil {
					continue
				}
				reason = "no route named " + name
			case method != "" && path != "":
				if routeFor(t, method, path) != nil {
					continue
				}
				reason = "no route for " + method + " " + path
			default:
				continue // no claim
			}
			k := in.Name + "\x00" + in.Version + "\x00" + ep.Name
			c := byKey[k]
			if c == nil {
				c = &DiscoveredClaim{Kind: responderKind, Service: in.Name, Version: in.Version, Endpoint: ep.Name,
					Subject: ep.Subject, Route: name, Method: method, Path: path, Reason: reason,
					Suggested: suggestRoute(in.Name, ep, name, method, path)}
				byKey[k], ids[k] = c, map[string]bool{}
				order = append(order, k)
			}
			ids[k][in.ID] = true
			c.Instances = len(ids[k])
		}
	}
	out := make([]DiscoveredClaim, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	slices.SortStableFunc(out, func(a, b DiscoveredClaim) int {
		return strings.Compare(a.Service+"\x00"+a.Version+"\x00"+a.Endpoint, b.Service+"\x00"+b.Version+"\x00"+b.Endpoint)
	})
	return out
}

// routeFor is the route a claim by method and path names: the same path,
// and the same method or a route for any method.
func routeFor(t *routes.Table, method, path string) *routes.Route {
	for _, rt := range t.Routes {
		if rt.Path == path && (rt.Method == method || rt.Method == "*") {
			return rt
		}
	}
	return nil
}

// suggestRoute writes a route entry for a claim. A route's subject has no
// wildcards, so each "*" of the endpoint's subject takes the path's
// parameters in order ({token2} and so on when the path has too few); a
// ">" cannot be written and the note says so.
func suggestRoute(service string, ep micro.EndpointInfo, name, method, path string) SuggestedRoute {
	var s SuggestedRoute
	s.Name, s.Method, s.Path = name, method, path
	if s.Name == "" {
		s.Name = ep.Name
	}
	if s.Method == "" {
		s.Method = "GET"
	}
	var params []string
	if s.Path == "" {
		s.Path = "/" + service + "/" + ep.Name
	} else if r, err := routes.Load("suggestion", fmt.Appendf(nil, "routes:\n  - {name: x, path: %q, nats: {subject: x}}\n", s.Path), func(string) (string, bool) { return "", false }); err == nil {
		params = r.Routes[0].Params
	}
	toks := strings.Split(ep.Subject, ".")
	for i, tok := range toks {
		switch tok {
		case "*":
			if len(params) > 0 {
				toks[i], params = "{"+params[0]+"}", params[1:]
			} else {
				toks[i] = fmt.Sprintf("{token%d}", i+1)
				s.Note = "the subject's wildcards became parameters the path does not have: add them to the path"
			}
		case ">":
			toks[i] = fmt.Sprintf("{token%d}", i+1)
			s.Note = "the endpoint takes any tokens after " + strings.Join(toks[:i], ".") + ": choose the ones this route sends"
		}
	}
	s.NATS.Subject = strings.Join(toks, ".")
	s.NATS.Pattern = string(routes.Request)
	// The metadata is whatever the service wrote: check the entry as the
	// config would, and say so when it would not pass.
	entry := fmt.Appendf(nil, "routes:\n  - {name: %q, method: %q, path: %q, nats: {subject: %q, pattern: %s}}\n",
		s.Name, s.Method, s.Path, s.NATS.Subject, s.NATS.Pattern)
	if _, err := routes.Load("suggestion", entry, func(string) (string, bool) { return "", false }); err != nil {
		why, _, _ := strings.Cut(err.Error(), "\n")
		if _, after, ok := strings.Cut(why, ": "); ok { // not the scratch file's name and line
			why = after
		}
		note := "this entry does not validate as written (" + why + "): fix it before use"
		if s.Note != "" {
			note = s.Note + "; " + note
		}
		s.Note = note
	}
	return s
}

// dialBriefly connects once with the config's credentials and TLS, for a
// command that looks and leaves: no reconnects. With no nats.url it
// reaches the embedded server of a running natsgate, if there is one.
func dialBriefly(cfg routes.NATSConfig) (*nats.Conn, error) {
	if cfg.URL == "" {
		cfg.URL = "nats://" + cfg.Embedded.Listen
	}
	zero := 0
	cfg.MaxReconnects = &zero
	return connect(cfg, nil, connHooks{
		disconnected: func(error) {}, reconnected: func() {}, closed: func() {},
		asyncError: func(*nats.Subscription, error) {},
	})
}

// DiscoverResponders connects to the config's NATS system briefly and
// looks once, as a running natsgate does every discovery.interval: what
// `natsgate routes` shows in its RESPONDERS column.
func DiscoverResponders(ctx context.Context, t *routes.Table) (map[string]*Responders, error) {
	nc, err := dialBriefly(t.Config.NATS)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	infos, err := fetchInfos(ctx, nc, discoveryWait, discoveryQuiet)
	if err != nil {
		return nil, err
	}
	return matchResponders(t, infos, time.Now().UTC()).byRoute, nil
}

// ConnectReport is what `natsgate validate --connect` finds on the
// config's NATS system, so a plan is checked before it is deployed.
type ConnectReport struct {
	// URL is the server connected to, credentials redacted.
	URL string
	// CutoverBucket is nats.cutover_bucket; CutoverErr why it cannot be
	// opened (nil: reachable).
	CutoverBucket string
	CutoverErr    error
	// StreamsErr is why the streams could not be listed (JetStream off).
	StreamsErr error
	Routes     []RouteCheck
	// Claims are endpoints claiming routes the config does not have.
	Claims []DiscoveredClaim
}

// RouteCheck is one route's readiness.
type RouteCheck struct {
	Name    string
	Pattern routes.Pattern
	Subject string
	// Responders found; nil for a route without a NATS side.
	Responders *Responders
	// Streams that store every subject a jetstream route renders.
	Streams []string
	// Problem says what is missing for the route to move to NATS: ""
	// when nothing is.
	Problem string
}

// OK reports whether nothing is missing anywhere.
func (r *ConnectReport) OK() bool {
	if r.CutoverErr != nil {
		return false
	}
	for _, rc := range r.Routes {
		if rc.Problem != "" {
			return false
		}
	}
	return true
}

// CheckConnect connects with the config's NATS settings and checks, per
// route, what a move to NATS needs: a request route a micro service that
// answers its subject, a jetstream route a stream that stores it (its
// subject covered by one of the stream's subjects); and whether the
// cutover bucket opens. A publish route needs nothing. It never sends a
// worker a request.
func CheckConnect(ctx context.Context, t *routes.Table) (*ConnectReport, error) {
	nc, err := dialBriefly(t.Config.NATS)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	rep := &ConnectReport{URL: nc.ConnectedUrlRedacted(), CutoverBucket: t.Config.NATS.CutoverBucket}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if _, err := js.KeyValue(ctx, t.Config.NATS.CutoverBucket); err != nil {
		rep.CutoverErr = jetStreamOff(err)
	}
	streams := map[string][]string{}
	var names []string
	lister := js.ListStreams(ctx)
	for si := range lister.Info() {
		streams[si.Config.Name] = si.Config.Subjects
		names = append(names, si.Config.Name)
	}
	rep.StreamsErr = jetStreamOff(lister.Err())
	slices.Sort(names)
	infos, err := fetchInfos(ctx, nc, discoveryWait, discoveryQuiet)
	if err != nil {
		return nil, err
	}
	found := matchResponders(t, infos, time.Now().UTC())
	rep.Claims = found.claims
	for _, rt := range t.Routes {
		rc := RouteCheck{Name: rt.Name}
		if !rt.HasNATS() {
			rep.Routes = append(rep.Routes, rc)
			continue
		}
		rc.Pattern, rc.Subject, rc.Responders = rt.Pattern, rt.Subject.String(), found.byRoute[rt.Name]
		switch rt.Pattern {
		case routes.Request:
			if rc.Responders.Count == 0 {
				rc.Problem = "no micro service answers " + rc.Subject + " (plain subscribers cannot be seen)"
			}
		case routes.JetStream:
			for _, name := range names {
				if slices.ContainsFunc(streams[name], rt.Subject.CoveredBy) {
					rc.Streams = append(rc.Streams, name)
				}
			}
			if len(rc.Streams) == 0 {
				rc.Problem = "no stream stores " + rc.Subject
				if rep.StreamsErr != nil {
					rc.Problem += " (cannot list streams: " + rep.StreamsErr.Error() + ")"
				}
			}
		}
		rep.Routes = append(rep.Routes, rc)
	}
	return rep, nil
}

// jetStreamOff names the cause NATS reports only as "no responders": no
// JetStream on the server or the account answers its API, which would
// otherwise read as a missing worker.
func jetStreamOff(err error) error {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("JetStream is not enabled on this server or account: %w", err)
	}
	return err
}
