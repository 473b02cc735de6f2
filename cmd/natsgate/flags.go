package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

// commandFlags is one command's flag set and usage. Flags take one dash or
// two (-watch, --watch), as Go's flag package reads them; a flag may have a
// short alias (-c for --config, as with nats-server), listed with it.
type commandFlags struct {
	*flag.FlagSet
	name     string            // "natsgate serve"
	synopsis string            // the usage line
	about    string            // what the command does, a paragraph
	short    map[string]string // long name -> short alias
}

// newCommandFlags starts the flags of `natsgate cmd`.
func newCommandFlags(cmd, synopsis, about string) *commandFlags {
	f := &commandFlags{
		FlagSet:  flag.NewFlagSet("natsgate "+cmd, flag.ContinueOnError),
		name:     "natsgate " + cmd,
		synopsis: synopsis,
		about:    about,
		short:    map[string]string{},
	}
	// Errors are printed once, by parse, as one line and then the usage.
	f.SetOutput(io.Discard)
	return f
}

// configFlag registers -c and --config for the configuration file.
func (f *commandFlags) configFlag() *string {
	p := f.String("config", "", "the configuration `FILE` (YAML)")
	f.StringVar(p, "c", "", "short for --config")
	f.short["config"] = "c"
	return p
}

// logFormatFlag registers --log-format.
func (f *commandFlags) logFormatFlag() *string {
	return f.String("log-format", "", "log format: `json|text` (overrides log.format)")
}

// parse reads args. done is true when the command must stop there with
// code: 0 after -h or --help (the usage on stdout), 2 after a flag the
// command does not take or an argument it does not want (one line naming
// it, then the usage, on stderr). The commands that parse take no
// arguments besides flags.
func (f *commandFlags) parse(args []string, stdout, stderr io.Writer) (code int, done bool) {
	if err := f.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			f.printUsage(stdout)
			return 0, true
		}
		return f.usageError(stderr, err.Error()), true
	}
	if f.NArg() > 0 {
		return f.usageError(stderr, fmt.Sprintf("unexpected argument %q", f.Arg(0))), true
	}
	return 0, false
}

// usageError prints msg as one line, then the usage, on stderr, and
// returns 2, the exit code of bad usage.
func (f *commandFlags) usageError(stderr io.Writer, msg string) int {
	fmt.Fprintf(stderr, "%s: %s\n\n", f.name, msg)
	f.printUsage(stderr)
	return 2
}

// loadConfig loads the file named by --config. A missing --config is bad
// usage (2); a config that does not load is printed, every problem with
// its file and line (1). t is nil unless it loaded.
func (f *commandFlags) loadConfig(file string, stderr io.Writer) (t *routes.Table, code int) {
	if file == "" {
		return nil, f.usageError(stderr, "--config FILE is required")
	}
	t, err := gateway.LoadConfig(file)
	if err != nil {
		printConfigError(stderr, err)
		return nil, 1
	}
	return t, 0
}

// printUsage writes the synopsis, the paragraph about the command and its
// flags, each alias beside its long name.
func (f *commandFlags) printUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage:\n  %s\n\n%s\n", f.synopsis, f.about)
	aliases := map[string]bool{}
	for _, s := range f.short {
		aliases[s] = true
	}
	var flags []*flag.Flag
	f.VisitAll(func(fl *flag.Flag) {
		if !aliases[fl.Name] {
			flags = append(flags, fl)
		}
	})
	if len(flags) == 0 {
		return
	}
	sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
	fmt.Fprintln(w, "\nFlags:")
	for _, fl := range flags {
		value, text := flag.UnquoteUsage(fl)
		head := "--" + fl.Name
		if s := f.short[fl.Name]; s != "" {
			head = "-" + s + ", " + head
		}
		if value != "" {
			head += " " + value
		}
		if fl.DefValue != "" && fl.DefValue != "false" {
			text += fmt.Sprintf(" (default %s)", fl.DefValue)
		}
		fmt.Fprintf(w, "  %s\n      %s\n", head, strings.ReplaceAll(text, "\n", "\n      "))
	}
}
