package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/natsgate/natsgate/importer"
)

const importUsage = `Usage: natsgate import openapi SPEC [--upstream NAME=URL] [--subject-prefix PREFIX] [-o FILE] [--merge EXISTING]

Writes a natsgate config with one legacy-stage route per operation of
SPEC (OpenAPI 3.0 or 3.1, or Swagger 2.0; YAML or JSON) and a catch-all
to the upstream. With --merge it adds SPEC's new operations to EXISTING,
keeps every route there as written, and lists routes whose operation left
SPEC. The config goes to -o FILE, or to standard output.
`

// importCmd runs `natsgate import openapi ...`: flags and files here,
// everything else in package importer.
func importCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsgate import openapi", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, with the usage
	upstream := fs.String("upstream", "", "the legacy service, `NAME=URL` (default legacy=<the spec's first server>)")
	prefix := fs.String("subject-prefix", "", "first tokens of every subject, `PREFIX` (default "+importer.DefaultSubjectPrefix+")")
	out := fs.String("o", "", "write the config to `FILE` instead of standard output")
	merge := fs.String("merge", "", "merge into this `EXISTING` config instead of writing a new one")
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, importUsage)
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	usageError := func(msg string) int {
		fmt.Fprintf(stderr, "natsgate import: %s\n\n", msg)
		printUsage(stderr)
		return 2
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		printUsage(stdout)
		return 0
	}
	if len(args) == 0 || args[0] != "openapi" {
		if len(args) == 0 {
			return usageError("want a format to import from: openapi")
		}
		return usageError(fmt.Sprintf("unknown format %q (use openapi)", args[0]))
	}
	args = args[1:]
	// The spec may come before or after the flags.
	var spec string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		spec, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return 0
		}
		return usageError(err.Error())
	}
	if spec == "" && fs.NArg() > 0 {
		spec = fs.Arg(0)
	}
	switch {
	case spec == "":
		return usageError("want the SPEC file to import")
	case fs.NArg() > 1 || (fs.NArg() == 1 && spec != fs.Arg(0)):
		return usageError(fmt.Sprintf("unexpected argument %q", fs.Arg(fs.NArg()-1)))
	}
	opts := importer.Options{SubjectPrefix: *prefix, LookupEnv: os.LookupEnv}
	if *upstream != "" {
		name, url, ok := strings.Cut(*upstream, "=")
		if !ok || name == "" {
			fmt.Fprintln(stderr, "natsgate import: --upstream wants NAME=URL")
			return 2
		}
		opts.Upstream, opts.UpstreamURL = name, url
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		fmt.Fprintln(stderr, "natsgate import:", err)
		return 1
	}
	var res *importer.Result
	if *merge != "" {
		existing, rerr := os.ReadFile(*merge)
		if rerr != nil {
			fmt.Fprintln(stderr, "natsgate import:", rerr)
			return 1
		}
		res, err = importer.Merge(existing, *merge, data, spec, opts)
	} else {
		res, err = importer.Import(data, spec, opts)
	}
	if err != nil {
		if errors.Is(err, importer.ErrUnreadableSpec) {
			fmt.Fprintln(stderr, err)
		} else {
			fmt.Fprintln(stderr, "natsgate import:", err)
		}
		return 1
	}
	for _, s := range res.Skipped {
		fmt.Fprintln(stderr, "natsgate import: not imported:", s)
	}
	for _, name := range res.Gone {
		fmt.Fprintf(stderr, "natsgate import: route %q: its operation is no longer in %s\n", name, spec)
	}
	what := "imported"
	if *merge != "" {
		what = "added"
	}
	fmt.Fprintf(stderr, "natsgate import: %s: %d operations, %d routes %s, %d skipped, %d gone\n",
		spec, res.Operations, len(res.Routes), what, len(res.Skipped), len(res.Gone))
	if *out == "" {
		_, err = stdout.Write(res.Config)
	} else {
		err = os.WriteFile(*out, res.Config, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "natsgate import:", err)
		return 1
	}
	return 0
}
