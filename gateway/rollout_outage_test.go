package gateway

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/natsgate/natsgate/internal/natstest"
)

// The gates judge no slot a live replica has not sent yet: a replica
// frozen across a slot's close (SIGSTOP, a stalled VM) sends it late, and
// a decision on the settled slot without it counts half the fleet's
// evidence (e2e: TestRolloutOutageLateSlotsAreWaitedFor judged 158 of the
// clients' 300 requests). A replica one slot behind is waited for; one
// further behind (a clock far back, a forged message) is not, so it
// cannot hold a rollout back.
func TestRolloutJudgesNoSlotALiveReplicaHasNotSent(t *testing.T) {
	ns := natstest.RunServer(t)
	b := startGateway(t, ns, fleetConfig("b", "get", ""))
	pub := natstest.Connect(t, ns)
	for _, tc := range []struct {
		name   string
		behind int64 // the peer's last slot, in slots behind the settled one
		want   int64 // the slot judged, in slots behind the settled one
	}{
		{"peer sent the settled slot", 0, 0},
		{"peer a slot late", 1, 1},
		{"peer three slots behind", 3, 0},
		{"peer ahead", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A slot may close between the reads: try again until the
			// settled slot is the same before and after.
			for range 5 {
				settled := b.history.settled()
				slot := settled - tc.behind
				m := &nats.Msg{Subject: "natsgate.fleet.stats.p00", Header: nats.Header{fleetEncoding: {"deflate"}}, Data: deflated(t, forgedPeer("p00", 1, slot))}
				// Sent again each poll: a message is not queued for a
				// subscriber, so one sent before the server has the
				// gateway's subscription is gone.
				waitFor(t, 10*time.Second, "the peer's message to be heard", func() bool {
					if err := pub.PublishMsg(m); err != nil {
						t.Fatal(err)
					}
					b.fleet.mu.Lock()
					defer b.fleet.mu.Unlock()
					p := b.fleet.peers["p00"]
					return p != nil && p.msg.Slot == slot
				})
				got := b.judgedSlot()
				if b.history.settled() != settled {
					continue
				}
				if got != settled-tc.want {
					t.Errorf("judged slot %d with the settled one %d and a live peer's last %d, want %d", got, settled, slot, settled-tc.want)
				}
				return
			}
			t.Fatal("a slot closed during every try")
		})
	}
}
