// Package e2e holds natsgate's end-to-end suite: it builds the natsgate,
// sample-worker and nats-server binaries, runs them as separate processes on
// random loopback ports, and shows each promise of docs/operations.md's
// "Guarantees" section under faults and hostile input: NATS servers killed
// and restarted, workers killed mid-flight, SIGTERM and SIGHUP under load,
// and requests no well-behaved client would send.
//
// The package has no code of its own outside its tests; run it with the
// rest of the module (go test -race ./...), or alone with go test ./e2e/.
// With -short the slowest scenarios are skipped.
package e2e
