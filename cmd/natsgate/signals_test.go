package main

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestSIGPIPEStaysCaughtAfterTheSignalsStop: serve and demo stop their
// signal handling as they return, and their log sink writes its last
// lines after that ("stopped", and whatever was still buffered). With a
// stderr whose reader is gone those writes fail, and Go ends a process
// writing to a broken pipe on descriptor 2 unless SIGPIPE is still asked
// for: natsgate then died by SIGPIPE after a clean shutdown, an exit no
// supervisor reads as clean. The child here (this test binary again)
// stops the signals, then writes to a closed stderr; it must exit 0.
func TestSIGPIPEStaysCaughtAfterTheSignalsStop(t *testing.T) {
	if os.Getenv("NATSGATE_TEST_SIGPIPE_CHILD") == "1" {
		_, stop := notifySignals()
		stop()
		for range 3 {
			_, _ = os.Stderr.Write([]byte("a line after the signals stopped\n"))
		}
		os.Exit(0)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // the reader is gone before the child writes
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGPIPEStaysCaughtAfterTheSignalsStop$")
	cmd.Env = append(os.Environ(), "NATSGATE_TEST_SIGPIPE_CHILD=1")
	cmd.Stderr = w
	err = cmd.Run()
	w.Close()
	if err != nil {
		status, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		t.Fatalf("the child ended with %v (signal %v), want exit 0", err, status.Signal())
	}
}
