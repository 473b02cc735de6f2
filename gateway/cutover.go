package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
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

// checkOverride is the one rule for what a route may be switched to at run
// time, applied alike to the admin API's PUT, to every value the watcher
// reads from the bucket and to `natsgate routes`, so that no replica runs a
// stage another would refuse. The stage must be one the route can run
// (rt.CheckStage); canary_percent, when given, must be 0 to 100 whatever
// the stage (it only matters for canary), and when left out is the
// config's. With rt nil (a key no route of this table has) only the
// route-independent rules apply; applyStage checks the rest if a reload
// adds the route. The error names the field.
func checkOverride(rt *routes.Route, stage string, percent *int) (Override, error) {
	st, err := routes.ParseStage(stage)
	if err != nil {
		return Override{}, fmt.Errorf("cutover: %w", err)
	}
	p := 0
	if rt != nil {
		if err := rt.CheckStage(st); err != nil {
			return Override{}, fmt.Errorf("cutover: %w", err)
		}
		p = rt.CanaryPercent
	}
	if percent != nil {
		p = *percent
	}
	if p < 0 || p > 100 {
		return Override{}, fmt.Errorf("canary_percent: must be 0 to 100, not %d", p)
	}
	return Override{Cutover: st, CanaryPercent: p}, nil
}

// decodeStrict decodes exactly one JSON value into v: unknown fields and
// anything after the value are errors, so a typo is refused rather than
// ignored. The admin API's body and the bucket's values both go through it.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("more data after the JSON value")
	}
	return nil
}

// storedOverride is an Override as read from the bucket, where
// canary_percent may be left out (the config's value then applies, as
// with the admin API).
type storedOverride struct {
	Cutover       string    `json:"cutover"`
	CanaryPercent *int      `json:"canary_percent"`
	By            string    `json:"by"`
	At            time.Time `json:"at"`
}

// decodeOverride reads a bucket value for route rt (nil: no such route
// here). It accepts exactly what the admin API would store.
func decodeOverride(rt *routes.Route, value []byte) (Override, error) {
	var v storedOverride
	if err := decodeStrict(bytes.NewReader(value), &v); err != nil {
		return Override{}, fmt.Errorf(`not a cutover override (want {"cutover": "legacy|shadow|canary|nats", "canary_percent": 0-100, "by": "...", "at": "RFC 3339 time"}): %w`, err)
	}
	o, err := checkOverride(rt, v.Cutover, v.CanaryPercent)
	if err != nil {
		return Override{}, err
	}
	if !validActor(v.By) {
		return Override{}, errors.New(`by: at most 128 printable characters, as the admin API stores it`)
	}
	o.By, o.At = v.By, v.At
	return o, nil
}

// cutovers holds the overrides every replica shares. The bucket is the
// source of truth; the map is this replica's copy, fed by the watcher.
type cutovers struct {
	mu        sync.Mutex
	kv        jetstream.KeyValue // nil while the bucket is unusable
	overrides map[string]Override
}

// store is the bucket, or nil while it cannot be used (JetStream off, the
// bucket deleted and not yet recreated, NATS down): admin writes are then
// refused with ErrCutoverStore.
func (c *cutovers) store() jetstream.KeyValue {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kv
}

func (c *cutovers) setStore(kv jetstream.KeyValue) {
	c.mu.Lock()
	c.kv = kv
	c.mu.Unlock()
}

// routesWithOverrides lists the routes this replica holds an override for.
func (c *cutovers) routesWithOverrides() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.overrides))
	for r := range c.overrides {
		out = append(out, r)
	}
	return out
}

// How the watcher retries and checks the bucket. Retries back off from
// cutoverRetryMin, doubling to cutoverRetryMax; while watching, the bucket's
// stream is looked up every cutoverCheckEvery (one small request) because a
// watch on a deleted stream only goes quiet.
const (
	cutoverRetryMin   = 250 * time.Millisecond
	cutoverRetryMax   = 5 * time.Second
	cutoverCheckEvery = 2 * time.Second
	cutoverOpTimeout  = 5 * time.Second
)

var (
	errBucketDeleted   = errors.New("the bucket was deleted")
	errBucketRecreated = errors.New("the bucket was deleted and created again")
	errWatchEnded      = errors.New("the watch ended")
)

// cutoverWatcher is the goroutine that keeps this replica's copy of the
// bucket current; Stop ends it and waits for it.
type cutoverWatcher struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Stop ends the watch and waits until its goroutine has returned.
func (w *cutoverWatcher) Stop() error {
	w.cancel()
	<-w.done
	return nil
}

// openCutovers starts the watcher. It returns once the first attempt to
// open the bucket has read every value, or has failed, or ctx ends, so a
// restarted replica serves the current stages from its first request. A
// bucket that cannot be opened now (JetStream off, say) is retried in the
// background until it can.
func (s *Server) openCutovers(ctx context.Context) {
	wctx, cancel := context.WithCancel(context.Background())
	w := &cutoverWatcher{cancel: cancel, done: make(chan struct{})}
	s.cutoverWatch = w
	first := make(chan struct{})
	go func() {
		defer close(w.done)
		s.watchCutovers(wctx, sync.OnceFunc(func() { close(first) }))
	}()
	select {
	case <-first:
	case <-ctx.Done():
		s.log.Warn("cutover overrides not all read at start; they apply as they arrive", "bucket", s.cfg.NATS.CutoverBucket)
	}
}

// watchCutovers (re)opens the bucket, creating it if missing, reads all of
// it and follows its changes, until ctx ends. Whenever the bucket becomes
// unusable (missing, deleted, recreated, JetStream not there yet, NATS
// down) it says so, refuses admin writes, and tries again with backoff.
// The copy of the overrides is kept meanwhile: the routes keep their
// current stages until the bucket can be read again.
func (s *Server) watchCutovers(ctx context.Context, firstDone func()) {
	defer firstDone()
	bucket := s.cfg.NATS.CutoverBucket
	backoff, lastErr := cutoverRetryMin, ""
	for {
		read, err := s.watchBucket(ctx, firstDone)
		s.cutovers.setStore(nil)
		if ctx.Err() != nil {
			return
		}
		firstDone()
		if read {
			backoff, lastErr = cutoverRetryMin, ""
		}
		// One warning per distinct cause; a cause that persists is
		// repeated only at debug level.
		level := slog.LevelWarn
		if err.Error() == lastErr {
			level = slog.LevelDebug
		}
		lastErr = err.Error()
		s.log.Log(ctx, level, "cutover bucket unusable: admin changes are refused and routes keep their current stages; retrying",
			"bucket", bucket, "error", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, cutoverRetryMax)
	}
}

// watchBucket is one life of the watch: it opens (or creates) the bucket,
// applies every value in it (dropping overrides that are no longer there),
// then applies changes until the bucket goes away or ctx ends. read says
// whether all values were read, so that the caller retries at once after a
// watch that had been working.
func (s *Server) watchBucket(ctx context.Context, firstDone func()) (read bool, err error) {
	bucket := s.cfg.NATS.CutoverBucket
	octx, cancel := context.WithTimeout(ctx, cutoverOpTimeout)
	kv, err := s.conn.js.CreateOrUpdateKeyValue(octx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "natsgate run-time cutover overrides, by route name",
		History:     16,
	})
	cancel()
	if err != nil {
		return false, fmt.Errorf("opening the bucket: %w", err)
	}
	created, err := bucketCreated(ctx, kv)
	if err != nil {
		return false, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.WatchAll(wctx)
	if err != nil {
		return false, fmt.Errorf("watching the bucket: %w", err)
	}
	defer stopWatch(w)
	tick := time.NewTicker(cutoverCheckEvery)
	defer tick.Stop()
	started := time.Now()
	seen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return read, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return read, errWatchEnded
			}
			if e == nil { // every value present at the start has been delivered
				if !read {
					read = true
					s.dropOverridesNotIn(seen)
					s.cutovers.setStore(kv)
					s.log.Info("cutover bucket open and watched", "bucket", bucket, "keys", len(seen))
					firstDone()
				}
				continue
			}
			if !read {
				seen[e.Key()] = true
			}
			s.applyEntry(e)
		case <-tick.C:
			if !read && time.Since(started) > cutoverOpTimeout {
				return false, errors.New("the bucket's values were not all delivered")
			}
			c, err := bucketCreated(ctx, kv)
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound):
				return read, errBucketDeleted
			case err != nil:
				return read, err
			case !c.Equal(created):
				return read, errBucketRecreated
			}
		}
	}
}

// bucketCreated is when the bucket's stream was created: a bucket deleted
// and created again under the same name has another time.
func bucketCreated(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, cutoverOpTimeout)
	defer cancel()
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("reading the bucket's status: %w", err)
	}
	if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
		return bs.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}

// stopWatch ends a watch and reads what it still delivers until its
// channel closes (bounded), since its subscription blocks while the
// channel is full.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// applyEntry applies one change read from the bucket. A value that
// checkOverride refuses means the config's stage for that route, here as
// in a replica started afterwards, with a warning naming the key and why.
func (s *Server) applyEntry(e jetstream.KeyValueEntry) {
	route := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		s.setOverride(route, nil)
		return
	}
	var rt *routes.Route
	if h := s.table.Load().handlers[route]; h != nil {
		rt = h.rt
	}
	o, err := decodeOverride(rt, e.Value())
	if err != nil {
		s.log.Warn("refusing a cutover override in the bucket; the route runs its configured stage",
			"bucket", s.cfg.NATS.CutoverBucket, "key", route, "revision", e.Revision(), "error", err)
		s.setOverride(route, nil)
		return
	}
	s.setOverride(route, &o)
}

// dropOverridesNotIn returns to the config's stage every route whose
// override is no longer in the bucket (it was deleted while the watch was
// down, or the bucket was recreated empty).
func (s *Server) dropOverridesNotIn(seen map[string]bool) {
	for _, route := range s.cutovers.routesWithOverrides() {
		if !seen[route] {
			s.setOverride(route, nil)
		}
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
		s.countStages()
		now := h.stage.Load()
		if old == nil || old.stage != now.stage || old.percent != now.percent || (old.override == nil) != (now.override == nil) {
			s.log.Info("cutover applied", "route", route, "old_stage", old.stage, "old_percent", old.percent,
				"stage", now.stage, "percent", now.percent, "override", now.override != nil)
		}
		if old != nil && (old.stage != now.stage || old.percent != now.percent) {
			s.history.mark(route, "stage", stageText(now))
		}
	}
}

// stageText says what a route runs now, for a mark on its chart:
// "canary 5% by ops@web-1", "legacy (config)".
func stageText(st *stageState) string {
	t := string(st.stage)
	if st.stage == routes.Canary {
		t += " " + strconv.Itoa(st.percent) + "%"
	}
	if st.override == nil {
		return t + " (config)"
	}
	if st.override.By != "" {
		t += " by " + st.override.By
	}
	return t
}

// applyStage sets the route's stage from an override, or from the config
// when o is nil or no longer fits the route (after a reload, say).
func (h *routeHandler) applyStage(s *Server, o *Override) {
	st := &stageState{stage: h.rt.Cutover, percent: h.rt.CanaryPercent}
	if o != nil {
		if _, err := checkOverride(h.rt, string(o.Cutover), &o.CanaryPercent); err != nil {
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
	kv := s.cutovers.store()
	if kv == nil {
		return ErrCutoverStore
	}
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, route, b); err != nil {
		return fmt.Errorf("%w: %v", ErrCutoverStore, err)
	}
	s.setOverride(route, &o) // at once here; the watcher repeats it harmlessly
	return nil
}

// deleteOverride removes a route's override, returning it to the config.
func (s *Server) deleteOverride(ctx context.Context, route string) error {
	kv := s.cutovers.store()
	if kv == nil {
		return ErrCutoverStore
	}
	if err := kv.Delete(ctx, route); err != nil {
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
		if o, err := decodeOverride(r, e.Value()); err == nil {
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
