package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docCommand is one command line a doc shows: the file, the command and
// the flags it names.
type docCommand struct {
	file, line string
	cmd        []string // the words run takes before the flags: "serve", or "import", "openapi"
	flags      []string // flag names without their dashes
}

var (
	// docCommandRe finds a natsgate command in a line of a doc; what
	// follows it, up to the end of its code span or a shell comment, is
	// its arguments.
	docCommandRe = regexp.MustCompile(`\bnatsgate (serve|validate|routes|demo|health|version|rollout|report|import)\b`)
	docFlagRe    = regexp.MustCompile(`(?:^|[\s\[|(])--?([a-zA-Z][a-zA-Z0-9-]*)`)
)

// docCommands reads every natsgate command line of README.md and
// docs/*.md, in code blocks and in code spans alike.
func docCommands(t *testing.T) []docCommand {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	var out []docCommand
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, loc := range docCommandRe.FindAllStringSubmatchIndex(line, -1) {
				rest := line[loc[1]:]
				if i := strings.IndexByte(rest, '`'); i >= 0 {
					rest = rest[:i]
				}
				if i := strings.Index(rest, " #"); i >= 0 {
					rest = rest[:i]
				}
				c := docCommand{file: strings.TrimPrefix(f, "../../"), line: strings.TrimSpace(line), cmd: []string{line[loc[2]:loc[3]]}}
				if c.cmd[0] == "import" {
					c.cmd = append(c.cmd, "openapi")
				}
				for _, m := range docFlagRe.FindAllStringSubmatch(rest, -1) {
					if name := m[1]; name != "h" && name != "help" {
						c.flags = append(c.flags, name)
					}
				}
				out = append(out, c)
			}
		}
	}
	return out
}

// TestDocsNameOnlyFlagsTheirCommandsTake runs each flag that a command line
// in README.md or docs/*.md gives a natsgate command through that
// command's own flag parsing, so that a doc cannot show a flag the command
// does not take or spells differently. Each flag is given as --name=x and
// followed by a flag no command has: parsing then stops with exit 2 before
// the command does anything, and says which of the two it did not know.
func TestDocsNameOnlyFlagsTheirCommandsTake(t *testing.T) {
	const unknown = "zz-no-such-flag"
	cmds := docCommands(t)
	checked := 0
	for _, c := range cmds {
		for _, name := range c.flags {
			checked++
			var stdout, stderr bytes.Buffer
			args := append(append([]string{}, c.cmd...), "--"+name+"=x", "--"+unknown)
			code := run(args, &stdout, &stderr)
			if strings.Contains(stderr.String(), "flag provided but not defined: -"+name+"\n") {
				t.Errorf("%s: natsgate %s takes no flag --%s\n    in: %s", c.file, strings.Join(c.cmd, " "), name, c.line)
				continue
			}
			// Either the flag took x and the unknown one stopped the
			// parse, or the flag is a boolean that refused x: both show it
			// was known, and neither ran the command.
			if code != 2 || !(strings.Contains(stderr.String(), "not defined: -"+unknown) || strings.Contains(stderr.String(), "for -"+name)) {
				t.Errorf("natsgate %s: exit %d and stderr %q, want 2 and a parse error about --%s or --%s", strings.Join(args, " "), code, stderr.String(), name, unknown)
			}
		}
	}
	if len(cmds) < 20 || checked < 30 {
		t.Fatalf("found %d command lines naming %d flags in the docs; they did not read as expected", len(cmds), checked)
	}
}
