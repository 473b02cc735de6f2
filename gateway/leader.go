package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The leader: of the replicas on one NATS system, at most one leads, for
// work only one of them may do (the rollout controller). They elect it
// through one key in a JetStream key-value bucket whose entries expire
// after fleet.leader_ttl: a replica leads while the key holds its id.
// Every third of the TTL the leader renews the key by compare-and-set on
// the revision it wrote last, and the others try to create it; when the
// leader dies the key expires and one of them creates it. A renewal that
// fails ends the lead at once, and a leader that has not renewed within
// nine tenths of the TTL no longer calls itself one, so two replicas never
// both believe they lead while the store is reachable. A clean stop
// deletes the key, so another replica leads at its next attempt.
const (
	leaderKey = "leader"
	// leaderRetryMin and leaderRetryMax bound the wait before opening the
	// bucket again when JetStream or the bucket is unusable.
	leaderRetryMin = 250 * time.Millisecond
	leaderRetryMax = 30 * time.Second
)

// leader is this replica's side of the election.
type leader struct {
	s      *Server
	id     string
	bucket string
	ttl    time.Duration

	// until is when this replica's lead ends unless renewed, as
	// UnixNano; zero when it does not lead.
	until atomic.Int64

	mu     sync.Mutex
	holder string // the key's value as last read; "" when none or unknown
	rev    uint64 // the revision this replica wrote last, while it leads
	kv     jetstream.KeyValue

	cancel context.CancelFunc
	done   chan struct{}
	// release says whether stop deletes the key: tests turn it off to
	// play a replica that dies without a word.
	release bool
}

// startLeader joins the election, when the fleet is enabled. It runs
// after startFleet, whose replica id it campaigns with.
func (s *Server) startLeader() {
	s.metrics.FleetLeader.Set(0)
	if s.fleet == nil || s.conn.js == nil {
		return
	}
	fc := s.cfg.Fleet
	ttl := time.Duration(fc.LeaderTTL)
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	bucket := fc.LeaderBucket
	if bucket == "" {
		bucket = "natsgate_leader"
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &leader{s: s, id: s.fleet.id, bucket: bucket, ttl: ttl, cancel: cancel, done: make(chan struct{}), release: true}
	s.leader = l
	go l.run(ctx)
}

// stopLeader leaves the election: the loop ends and, if this replica
// holds the key, it deletes it (only the revision it wrote, so never a
// successor's). Shutdown calls it before the NATS connection drains.
func (s *Server) stopLeader() {
	l := s.leader
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// IsLeader says whether this replica is the fleet's leader now: it holds
// the election key and renewed it within the TTL.
func (s *Server) IsLeader() bool {
	return s.leader != nil && s.leader.leads()
}

// leaderID is the leader's id as this replica last read it, "" when
// there is none or this replica cannot read the bucket.
func (s *Server) leaderID() string {
	if s.leader == nil {
		return ""
	}
	if s.leader.leads() {
		return s.leader.id
	}
	s.leader.mu.Lock()
	defer s.leader.mu.Unlock()
	if s.leader.holder == s.leader.id {
		return "" // this replica's own lapsed claim
	}
	return s.leader.holder
}

func (l *leader) leads() bool {
	u := l.until.Load()
	return u != 0 && time.Now().UnixNano() < u
}

// run campaigns every third of the TTL until ctx ends. While the bucket
// cannot be opened it retries with backoff, logging each distinct cause
// once at warn level and its repeats at debug.
func (l *leader) run(ctx context.Context) {
	defer close(l.done)
	defer l.resign()
	backoff, lastErr := leaderRetryMin, ""
	logErr := func(msg string, err error, extra ...any) {
		level := slog.LevelWarn
		if err.Error() == lastErr {
			level = slog.LevelDebug
		}
		lastErr = err.Error()
		l.s.log.Log(ctx, level, msg, append([]any{"bucket", l.bucket, "error", err}, extra...)...)
	}
	for ctx.Err() == nil {
		if l.kv == nil {
			if err := l.open(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.stepDown("")
				logErr("leader election: bucket unusable, this replica does not lead; retrying", err, "retry_in", backoff)
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(backoff*2, leaderRetryMax)
				continue
			}
			backoff = leaderRetryMin
		}
		if err := l.campaign(ctx); err != nil && ctx.Err() == nil {
			logErr("leader election: this replica does not lead", err)
			if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) ||
				errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
				l.kv = nil // reopen, creating it again
			}
		} else if err == nil {
			lastErr = ""
		}
		if !sleepCtx(ctx, l.ttl/3) {
			return
		}
	}
}

// open opens the bucket, creating it if missing, with the TTL as its
// entries' age limit.
func (l *leader) open(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, max(l.ttl, 2*time.Second))
	defer cancel()
	kv, err := l.s.conn.js.CreateOrUpdateKeyValue(octx, jetstream.KeyValueConfig{
		Bucket:      l.bucket,
		Description: "natsgate fleet leader election: the leader's replica id, expiring after fleet.leader_ttl",
		History:     1,
		TTL:         l.ttl,
	})
	if err != nil {
		return fmt.Errorf("opening the bucket: %w", err)
	}
	l.kv = kv
	return nil
}

// campaign is one round: the leader renews, the others try to create the
// key; either way the key's holder is noted. Each call is bounded by a
// third of the TTL, so a stuck store cannot keep a lapsed lead alive.
func (l *leader) campaign(ctx context.Context) error {
	octx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	start := time.Now()
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	if rev != 0 {
		nrev, err := l.kv.Update(octx, leaderKey, []byte(l.id), rev)
		if err != nil {
			l.stepDown("")
			return fmt.Errorf("renewing the lead: %w", err)
		}
		l.lead(nrev, start)
		return nil
	}
	nrev, err := l.kv.Create(octx, leaderKey, []byte(l.id))
	if err == nil {
		l.lead(nrev, start)
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		l.stepDown("")
		return fmt.Errorf("claiming the lead: %w", err)
	}
	e, err := l.kv.Get(octx, leaderKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.stepDown("") // expired meanwhile: the next round creates it
		return nil
	case err != nil:
		l.stepDown("")
		return fmt.Errorf("reading the leader: %w", err)
	}
	if string(e.Value()) != l.id {
		l.stepDown(string(e.Value()))
		return nil
	}
	// The key still holds this replica's id: a renewal whose answer was
	// lost, or a restart within the TTL. Take it back on its revision.
	nrev, err = l.kv.Update(octx, leaderKey, []byte(l.id), e.Revision())
	if err != nil {
		l.stepDown("")
		return fmt.Errorf("renewing the lead: %w", err)
	}
	l.lead(nrev, start)
	return nil
}

// lead records a successful create or renewal sent at start: the lead
// lasts until nine tenths of the TTL after it, a margin for the clocks.
func (l *leader) lead(rev uint64, start time.Time) {
	l.mu.Lock()
	l.rev, l.holder = rev, l.id
	l.mu.Unlock()
	if l.until.Swap(start.Add(l.ttl*9/10).UnixNano()) == 0 {
		l.s.log.Info("leader election: this replica leads the fleet", "id", l.id, "ttl", l.ttl)
	}
	l.s.metrics.FleetLeader.Set(1)
}

// stepDown ends this replica's lead, if it had one, and notes holder as
// the key's value. Losing the lead is a warning; giving it up at
// shutdown (resigning) is not.
func (l *leader) stepDown(holder string) { l.endLead(holder, slog.LevelWarn) }

func (l *leader) endLead(holder string, level slog.Level) {
	l.mu.Lock()
	l.rev, l.holder = 0, holder
	l.mu.Unlock()
	if l.until.Swap(0) != 0 {
		l.s.log.Log(context.Background(), level, "leader election: this replica no longer leads the fleet", "id", l.id)
	}
	l.s.metrics.FleetLeader.Set(0)
}

// resign ends the lead on stop, deleting the key if this replica wrote
// its latest revision, so that another replica need not wait for it to
// expire.
func (l *leader) resign() {
	l.mu.Lock()
	rev, kv := l.rev, l.kv
	l.mu.Unlock()
	l.endLead("", slog.LevelInfo)
	if rev == 0 || kv == nil || !l.release {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(l.ttl/3, time.Second))
	defer cancel()
	if err := kv.Delete(ctx, leaderKey, jetstream.LastRevision(rev)); err != nil {
		l.s.log.Warn("leader election: could not hand the lead back; another replica leads once it expires", "error", err, "ttl", l.ttl)
	}
}

// sleepCtx waits d, false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
