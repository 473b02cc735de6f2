//go:build race

package gateway

// raceEnabled: the race detector is on. It drops a quarter of what a
// sync.Pool is given, and natsgate, chi and nats.go pool on the request
// path, so allocation counts are higher with it.
const raceEnabled = true
