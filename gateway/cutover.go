package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/routes"
)

// Override is a run-time cutover for one route, stored in the JetStream
// key-value bucket under the route's name so every replica applies it.
type Override struct {
	Cutover       routes.Stage `json:"cutover"`
	CanaryPercent int          `json:"canary_percent"`
	// By and At say who set it and when, for the audit trail.
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// stageState is what a route runs at now.
type stageState struct {
	stage    routes.Stage
	percent  int
	override *Override // nil: the config file's value
}

// ErrCutoverStore is returned when overrides cannot be stored because the
// key-value bucket is unavailable (JetStream off, or NATS down).
var ErrCutoverStore = errors.New("the cutover store is unavailable")

// cutovers holds the overrides every replica shares. The bucket is the
// source of truth; the map is this replica's copy, fed by a watcher.
type cutovers struct {
	kv jetstream.KeyValue // nil when the bucket could not be opened

	mu        sync.Mutex
	overrides map[string]Override
}

// openCutovers opens (or creates) the bucket and starts watching it. The
// first batch of values is applied before it returns, so a restarted
// replica serves the current stages from its first request.
func (s *Server) openCutovers(ctx context.Context) {
	s.cutovers = &cutovers{overrides: map[string]Override{}}
	bucket := s.cfg.NATS.CutoverBucket
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "natsgate run-time cutover overrides, by route name",
		History:     16,
	})
	if err != nil {
		s.log.Warn("run-time cutover is off: the key-value bucket cannot be opened; routes keep their configured stages",
			"bucket", bucket, "error", err)
		return
	}
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		s.log.Warn("run-time cutover is off: cannot watch the bucket", "bucket", bucket, "error", err)
		return
	}
	s.cutovers.kv = kv
	s.cutoverWatch = w
	initial := make(chan struct{})
	go s.watchCutovers(w, initial)
	select {
	case <-initial:
	case <-ctx.Done():
		s.log.Warn("cutover overrides not all read at start; they apply as they arrive", "bucket", bucket)
	}
}

// watchCutovers applies every change to the bucket, from any replica.
func (s *Server) watchCutovers(w jetstream.KeyWatcher, initial chan struct{}) {
	closeInitial := sync.OnceFunc(func() { close(initial) })
	defer closeInitial()
	for e := range w.Updates() {
		if e == nil { // all values present at start have been delivered
			closeInitial()
			continue
		}
		route := e.Key()
		if e.Operation() != jetstream.KeyValuePut {
			s.setOverride(route, nil)
			continue
		}
		var o Override
		if err := json.Unmarshal(e.Value(), &o); err != nil {
			s.log.Error("ignoring a bad cutover override", "route", route, "error", err)
			continue
		}
		s.setOverride(route, &o)
	}
}

// setOverride records an override (nil: back to the config) and applies it
// to the route being served, if the override fits the route.
func (s *Server) setOverride(route string, o *Override) {
	s.cutovers.mu.Lock()
	if o == nil {
		delete(s.cutovers.overrides, route)
	} else {
		s.cutovers.overrides[route] = *o
	}
	s.cutovers.mu.Unlock()
	if h := s.table.Load().handlers[route]; h != nil {
		old := h.stage.Load()
		h.applyStage(s, o)
		now := h.stage.Load()
		s.log.Info("cutover applied", "route", route, "old_stage", old.stage, "old_percent", old.percent,
			"stage", now.stage, "percent", now.percent, "override", o != nil)
	}
}

// applyStage sets the route's stage from an override, or from the config
// when o is nil or no longer fits the route (after a reload, say).
func (h *routeHandler) applyStage(s *Server, o *Override) {
	st := &stageState{stage: h.rt.Cutover, percent: h.rt.CanaryPercent}
	if o != nil {
		if err := h.rt.CheckStage(o.Cutover); err != nil {
			s.log.Warn("cutover override does not fit the route; using the config's stage", "route", h.rt.Name, "error", err)
		} else {
			oc := *o
			st = &stageState{stage: o.Cutover, percent: o.CanaryPercent, override: &oc}
		}
	}
	h.stage.Store(st)
	s.metrics.SetStage(h.rt.Name, string(st.stage))
}

// override returns the stored override of a route, if any.
func (c *cutovers) override(route string) *Override {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.overrides[route]; ok {
		return &o
	}
	return nil
}

// putOverride stores an override in the bucket; every replica's watcher,
// this one's included, applies it.
func (s *Server) putOverride(ctx context.Context, route string, o Override) error {
	if s.cutovers.kv == nil {
		return ErrCutoverStore
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if _, err := s.cutovers.kv.Put(ctx, route, b); err != nil {
		return fmt.Errorf("%w: %v", ErrCutoverStore, err)
	}
	s.setOverride(route, &o) // at once here; the watcher repeats it harmlessly
	return nil
}

// deleteOverride removes a route's override, returning it to the config.
func (s *Server) deleteOverride(ctx context.Context, route string) error {
	if s.cutovers.kv == nil {
		return ErrCutoverStore
	}
	if err := s.cutovers.kv.Delete(ctx, route); err != nil {
		return fmt.Errorf("%w: %v", ErrCutoverStore, err)
	}
	s.setOverride(route, nil)
	return nil
}

// toNATS decides whether a canary request goes to NATS. With a canary key
// header the same key always lands on the same side.
func (h *routeHandler) toNATS(r *http.Request, percent int) bool {
	switch {
	case percent <= 0:
		return false
	case percent >= 100:
		return true
	}
	if h.rt.CanaryKey != "" {
		if v := r.Header.Get(h.rt.CanaryKey); v != "" {
			f := fnv.New32a()
			_, _ = f.Write([]byte(v))
			return int(f.Sum32()%100) < percent
		}
	}
	return rand.IntN(100) < percent
}

// EffectiveStages reads the overrides in the bucket of a config's NATS
// system (for a config without nats.url, the embedded server of a running
// natsgate), for `natsgate routes`. Where NATS cannot be reached it says so
// and returns nil, so the caller prints the config's stages.
func EffectiveStages(t *routes.Table, warn func(string)) func(*routes.Route) routes.Stage {
	cfg := t.Config.NATS
	if cfg.URL == "" { // the embedded server of a running natsgate, if there is one
		cfg.URL = "nats://" + cfg.Embedded.Listen
	}
	zero := 0
	cfg.MaxReconnects = &zero
	nc, err := connect(cfg, nil, connHooks{
		disconnected: func(error) {}, reconnected: func() {}, closed: func() {},
		asyncError: func(*nats.Subscription, error) {},
	})
	if err != nil {
		warn(fmt.Sprintf("cannot read run-time overrides (%v): showing the config's stages", err))
		return nil
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		warn(fmt.Sprintf("cannot read run-time overrides (%v): showing the config's stages", err))
		return nil
	}
	kv, err := js.KeyValue(ctx, cfg.CutoverBucket)
	if err != nil {
		warn(fmt.Sprintf("no cutover bucket %q yet (%v): showing the config's stages", cfg.CutoverBucket, err))
		return nil
	}
	stages := map[string]routes.Stage{}
	for _, r := range t.Routes {
		e, err := kv.Get(ctx, r.Name)
		if err != nil {
			continue
		}
		var o Override
		if json.Unmarshal(e.Value(), &o) == nil && r.CheckStage(o.Cutover) == nil {
			stages[r.Name] = o.Cutover
		}
	}
	return func(r *routes.Route) routes.Stage {
		if st, ok := stages[r.Name]; ok {
			return st + "*"
		}
		return r.Cutover
	}
}
