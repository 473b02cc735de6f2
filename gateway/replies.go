package gateway

import (
	crand "crypto/rand"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replyMux receives the reply to every request natsgate sends, on one
// wildcard subscription of the connection (_INBOX.<id>.*, or under
// nats.inbox_prefix in place of _INBOX), and hands each
// to the request waiting for it, as nats.go's own request mux does. It
// exists to wait differently: a request waits in one select on its reply,
// its client leaving and its timeout, with a pooled timer and channel,
// where RequestMsgWithContext needs a context built for each request (a
// deadline, its timer, and a hook on the connection's epoch registered
// under one lock shared by every request). When the connection drops,
// abandon ends every wait at once.
//
// A request's token is random, not a count: every worker sees the reply
// subjects of the requests it serves, and a token that followed from the
// last one would let a worker of one route (or any client that once saw
// a reply subject) answer the next request of any route before its own
// worker did.
type replyMux struct {
	nc     *nats.Conn
	prefix string // the inbox subject up to the token: "<inbox prefix>.<nuid>."
	sub    *nats.Subscription

	mu      sync.Mutex
	ids     *rand.ChaCha8 // the tokens, under mu; seeded from crypto/rand
	waiting map[uint64]chan *nats.Msg
}

// The reply subscription's pending limits (see newReplyMux).
const (
	replyPendingMsgs  = 1 << 16
	replyPendingBytes = 512 << 20
)

// errReplyTimeout is a request that got no reply within its timeout.
var errReplyTimeout = nats.ErrTimeout

// errEpochEnded is a request whose connection dropped while it waited.
var errEpochEnded = errors.New("the NATS connection dropped while waiting for the reply")

// abandoned is handed to every waiting request when the connection drops.
var abandoned = &nats.Msg{}

// newReplyMux subscribes the mux's inbox on nc.
func newReplyMux(nc *nats.Conn) (*replyMux, error) {
	// An inbox of its own (the connection's inbox prefix, a new nuid),
	// apart from the one nats.go muxes its own requests on (JetStream's).
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // never fails (crypto/rand's documented contract)
	m := &replyMux{nc: nc, prefix: nc.NewInbox() + ".", ids: rand.NewChaCha8(seed), waiting: map[uint64]chan *nats.Msg{}}
	sub, err := nc.Subscribe(m.prefix+"*", m.deliver)
	if err != nil {
		return nil, err
	}
	// Replies are handed on as they come (a map lookup and a channel
	// send), so real ones never wait in numbers; the bound is for a flood
	// sent to the inbox by someone else on the account, which would
	// otherwise grow natsgate's memory without end. Past it messages are
	// dropped as a slow consumer's, and a reply among them is a 504.
	_ = sub.SetPendingLimits(replyPendingMsgs, replyPendingBytes)
	m.sub = sub
	return m, nil
}

// deliver hands a reply to its request, once: a second reply to the same
// request, or one that comes after the request gave up, is dropped. The
// send happens under the lock, so a request that has given up and taken
// its channel back can never receive a stale reply through it.
func (m *replyMux) deliver(msg *nats.Msg) {
	token := msg.Subject[min(len(m.prefix), len(msg.Subject)):]
	id, err := strconv.ParseUint(token, 36, 64)
	if err != nil {
		return
	}
	m.mu.Lock()
	if ch := m.waiting[id]; ch != nil {
		delete(m.waiting, id)
		ch <- msg // buffered, and nobody else sends on it: never blocks
	}
	m.mu.Unlock()
}

// abandon ends every request waiting for a reply: the connection they
// were sent on dropped, so their replies can no longer come.
func (m *replyMux) abandon() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, ch := range m.waiting {
		delete(m.waiting, id)
		ch <- abandoned
	}
}

// waiter is what one request waits with, pooled.
type waiter struct {
	ch    chan *nats.Msg
	timer *time.Timer
}

var waiters = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &waiter{ch: make(chan *nats.Msg, 1), timer: t}
}}

// request publishes msg with a reply subject of the mux and waits for the
// reply, the client leaving (client closed), the connection dropping
// (abandon) or timeout. It returns nats.ErrNoResponders when the server
// says nobody is subscribed, errReplyTimeout on the timeout, ErrClientGone
// and errEpochEnded for the other two.
func (m *replyMux) request(msg *nats.Msg, client <-chan struct{}, timeout time.Duration) (*nats.Msg, error) {
	w := waiters.Get().(*waiter)
	m.mu.Lock()
	id := m.ids.Uint64()
	for m.waiting[id] != nil {
		id = m.ids.Uint64() // one in 2^64 per request waiting
	}
	m.waiting[id] = w.ch
	m.mu.Unlock()
	var token [16]byte
	msg.Reply = m.prefix + string(strconv.AppendUint(token[:0], id, 36))
	if err := m.nc.PublishMsg(msg); err != nil {
		m.forget(id, w)
		return nil, err
	}
	w.timer.Reset(timeout)
	var err error
	select {
	case rep := <-w.ch:
		w.timer.Stop()
		waiters.Put(w)
		switch {
		case rep == abandoned:
			return nil, errEpochEnded
		case len(rep.Data) == 0 && rep.Header.Get("Status") == "503":
			return nil, nats.ErrNoResponders
		}
		return rep, nil
	case <-client:
		err = ErrClientGone
	case <-w.timer.C:
		err = errReplyTimeout
	}
	w.timer.Stop()
	m.forget(id, w)
	return nil, err
}

// forget withdraws a request that stopped waiting and takes its channel
// back for the pool, emptied of a reply that came just before.
func (m *replyMux) forget(id uint64, w *waiter) {
	m.mu.Lock()
	delete(m.waiting, id)
	m.mu.Unlock()
	select {
	case <-w.ch:
	default:
	}
	waiters.Put(w)
}

// close ends the subscription.
func (m *replyMux) close() {
	if m.sub != nil {
		_ = m.sub.Unsubscribe()
	}
}
