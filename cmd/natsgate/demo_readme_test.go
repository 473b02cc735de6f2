package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/natsgate/natsgate/configs"
	"github.com/natsgate/natsgate/routes"
)

// readmeDemoBlock is the first ```sh block after the line "The demo prints"
// in README.md: the lines the README says the demo prints.
func readmeDemoBlock(t *testing.T) []string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "\nThe demo prints")
	if !ok {
		t.Fatal(`README.md has no line starting "The demo prints"`)
	}
	_, rest, ok = strings.Cut(rest, "```sh\n")
	if !ok {
		t.Fatal("README.md: no ```sh block after \"The demo prints\"")
	}
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("README.md: the demo's ```sh block is not closed")
	}
	return demoLineSet(block)
}

// demoLineSet splits text into lines, each with its runs of spaces made
// one and blank lines left out: the README aligns the trailing comments,
// and only the alignment may differ. Commands and comments must be the
// same, in the same order.
func demoLineSet(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestREADMEShowsTheDemosLines holds README.md's demo block to what the
// demo prints for configs/demo.yaml (its listeners and admin token), so
// neither can change without the other.
func TestREADMEShowsTheDemosLines(t *testing.T) {
	cfg, err := routes.Parse("configs/demo.yaml", configs.Demo, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printDemoIntro(&out, "nats://127.0.0.1:4222", cfg.HTTP.Listen, cfg.Admin.Listen, cfg.Admin.Token, false)
	printed := demoLineSet(out.String())
	want := demoLineSet(demoLines(cfg.HTTP.Listen, cfg.Admin.Listen, cfg.Admin.Token))
	if !strings.Contains(strings.Join(printed, "\n"), strings.Join(want, "\n")) {
		t.Fatalf("the demo does not print its lines together:\n%s", out.String())
	}
	got := readmeDemoBlock(t)
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Fatalf("README.md's demo block differs from what the demo prints at line %d:\nREADME: %q\ndemo:   %q\n(copy the demo's lines, cmd/natsgate/demo.go demoTry, into README.md)", i+1, g, w)
		}
	}
}

// TestDemoSaysItsTrafficRate holds the demo's and the README's word on
// --traffic to the traffic's own defaults: a rate over all routes.
func TestDemoSaysItsTrafficRate(t *testing.T) {
	var out bytes.Buffer
	printDemoIntro(&out, "nats://x", "127.0.0.1:1", "127.0.0.1:2", "tok", true)
	tr := newTraffic("http://127.0.0.1:1", &routes.Table{}, trafficOptions{}, nil)
	if tr.opts.PerSecond != defaultTrafficRate || tr.opts.Backoff != defaultTrafficBackoff {
		t.Fatalf("traffic defaults %+v, the note says %d a second and %s", tr.opts, defaultTrafficRate, defaultTrafficBackoff)
	}
	if !strings.Contains(out.String(), trafficNote()) {
		t.Fatalf("the demo does not say its rate:\n%s", out.String())
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if flat := strings.Join(strings.Fields(string(readme)), " "); !strings.Contains(flat, trafficNote()) {
		t.Fatalf("README.md does not say what demo --traffic sends: want the words %q", trafficNote())
	}
}
