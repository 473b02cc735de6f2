//go:build !race

package gateway

// raceAllocs is what the race detector adds to an allocation count: none
// without it (see race_on_test.go).
const raceAllocs = 0
