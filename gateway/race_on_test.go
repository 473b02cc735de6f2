//go:build race

package gateway

// raceAllocs is what the race detector adds to an allocation count: it
// drops a quarter of what a sync.Pool is given, and natsgate, chi and
// nats.go pool on the request path.
const raceAllocs = 6
