package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/natsgate/natsgate/gateway"
)

const reportUsage = `Usage:
  natsgate report [--admin URL | -c FILE] [--format text|markdown|json] [--cert FILE --key FILE]

report prints where the migration stands, from GET /admin/report over the
fleet's last 15 minutes: a summary line, then per route its stage, rollout
step, responders, share of traffic answered by NATS, shadow match rate, p50
and p99 of both backends and their ratio, 5xx share per backend, and whether
it is ready to move or blocked.

  --admin URL         the admin API (default: admin.listen from --config,
                      else http://127.0.0.1:9090)
  -c, --config FILE   read the admin address from a natsgate config
  --format F          text (a table), markdown (a GitHub table, to paste into
                      a migration's tracking issue) or json (the admin
                      API's JSON as received); default text
` + adminCertUsage

var reportFormats = []string{"text", "markdown", "json"}

// reportCmd runs `natsgate report`. It returns the exit code: 0 printed,
// 1 the gateway refused or could not be reached, or the config did not
// load, 2 bad usage.
func reportCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsgate report", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed once, with the usage
	admin := fs.String("admin", "", "admin API URL")
	config := fs.String("config", "", "natsgate configuration file")
	fs.StringVar(config, "c", "", "short for --config")
	format := fs.String("format", "text", "text, markdown or json")
	cert, key := adminCertFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, reportUsage)
			return 0
		}
		fmt.Fprintf(stderr, "natsgate report: %v\n\n%s", err, reportUsage)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "natsgate report: unexpected arguments %q\n\n%s", fs.Args(), reportUsage)
		return 2
	}
	if !slices.Contains(reportFormats, *format) {
		fmt.Fprintf(stderr, "natsgate report: unknown format %q (use %s)\n\n%s", *format, strings.Join(reportFormats, ", "), reportUsage)
		return 2
	}
	e, err := adminTarget(*config, *admin, "")
	if err == nil {
		err = e.withClientCert(*cert, *key)
	}
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	endpoint := e.Base + "/admin/report"
	req, err := http.NewRequest(http.MethodGet, endpoint, nil)
	if err != nil {
		fmt.Fprintf(stderr, "natsgate report: bad admin URL %q: %v\n", endpoint, err)
		return 1
	}
	raw, err := adminDo(e, req)
	if err != nil {
		fmt.Fprintf(stderr, "natsgate report: %v\n", err)
		return 1
	}
	var rep gateway.Report
	if err := json.Unmarshal(raw, &rep); err != nil || rep.Routes == nil {
		fmt.Fprintf(stderr, "natsgate report: %s answered what is not a report: %v\n", endpoint, err)
		return 1
	}
	switch *format {
	case "json":
		_, _ = stdout.Write(raw)
		if len(raw) > 0 && raw[len(raw)-1] != '\n' {
			fmt.Fprintln(stdout)
		}
	case "markdown":
		printReportMarkdown(stdout, &rep)
	default:
		printReportText(stdout, &rep)
	}
	return 0
}

// reportHeader names the table's columns, in the order reportCells fills
// them.
var reportHeader = []string{"ROUTE", "STAGE", "ROLLOUT", "RESPONDERS", "NATS SHARE", "SHADOW MATCH",
	"LEGACY P50", "LEGACY P99", "NATS P50", "NATS P99", "P99 RATIO", "LEGACY 5XX", "NATS 5XX", "STATUS"}

// reportMarkdownHeader is reportHeader as a markdown table's.
var reportMarkdownHeader = []string{"Route", "Stage", "Rollout", "Responders", "NATS share", "Shadow match",
	"Legacy p50", "Legacy p99", "NATS p50", "NATS p99", "p99 ratio", "Legacy 5xx", "NATS 5xx", "Status"}

// reportCells is one route's row: "-" where there is no figure.
func reportCells(r *gateway.RouteReport) []string {
	stage := string(r.Stage)
	if r.Stage == "canary" {
		stage += " " + strconv.Itoa(r.CanaryPercent) + "%"
	}
	rollout := "-"
	if ro := r.Rollout; ro != nil {
		rollout = ro.State
		if ro.Step > 0 {
			rollout += fmt.Sprintf(" %d/%d", ro.Step, ro.Steps)
		}
	}
	responders := "-"
	if r.Responders != nil {
		responders = strconv.Itoa(*r.Responders)
	}
	share := "-"
	if r.Legacy != nil || r.NATS != nil {
		share = pctCell(&r.NATSShare)
	}
	lat := func(b *gateway.ReportBackend, p99 bool) string {
		switch {
		case b == nil:
			return "-"
		case p99:
			return msCell(b.P99)
		}
		return msCell(b.P50)
	}
	errRate := func(b *gateway.ReportBackend) string {
		if b == nil {
			return "-"
		}
		return pctCell(&b.ErrorRate)
	}
	ratio := "-"
	if r.P99Ratio != nil {
		ratio = strconv.FormatFloat(*r.P99Ratio, 'f', 2, 64)
	}
	status := "-"
	switch {
	case r.Blocked != "":
		status = "blocked"
	case r.Ready:
		status = "ready"
	}
	return []string{r.Name, stage, rollout, responders, share, pctCell(r.ShadowMatchRate),
		lat(r.Legacy, false), lat(r.Legacy, true), lat(r.NATS, false), lat(r.NATS, true), ratio,
		errRate(r.Legacy), errRate(r.NATS), status}
}

// pctCell prints a share as a percentage to a tenth, "-" for none.
func pctCell(v *float64) string {
	if v == nil {
		return "-"
	}
	return strings.TrimSuffix(strconv.FormatFloat(*v*100, 'f', 1, 64), ".0") + "%"
}

// msCell prints milliseconds with about three significant digits.
func msCell(v *float64) string {
	switch {
	case v == nil:
		return "-"
	case *v >= 100:
		return strconv.FormatFloat(*v, 'f', 0, 64)
	case *v >= 10:
		return strconv.FormatFloat(*v, 'f', 1, 64)
	}
	return strconv.FormatFloat(*v, 'f', 2, 64)
}

// reportWindow says what the figures cover.
func reportWindow(rep *gateway.Report) string {
	return fmt.Sprintf("fleet history, last %s, at %s; latencies in ms", (time.Duration(rep.WindowSeconds) * time.Second).String(),
		rep.GeneratedAt.UTC().Format(time.RFC3339))
}

// printReportText prints the summary line, what it covers, a fixed-width
// table and the ready and blocked routes.
func printReportText(w io.Writer, rep *gateway.Report) {
	fmt.Fprintln(w, rep.Summary.Text)
	fmt.Fprintf(w, "(%s)\n\n", reportWindow(rep))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(reportHeader, "\t"))
	for i := range rep.Routes {
		fmt.Fprintln(tw, strings.Join(reportCells(&rep.Routes[i]), "\t"))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nready to move (%d): %s\n", len(rep.Summary.Ready), listOrNone(rep.Summary.Ready))
	fmt.Fprintf(w, "blocked (%d):", len(rep.Summary.Blocked))
	if len(rep.Summary.Blocked) == 0 {
		fmt.Fprint(w, " none")
	}
	fmt.Fprintln(w)
	for _, b := range rep.Summary.Blocked {
		fmt.Fprintf(w, "  %s: %s\n", b.Route, b.Why)
	}
}

// printReportMarkdown prints the same as a GitHub table, for a migration's
// tracking issue.
func printReportMarkdown(w io.Writer, rep *gateway.Report) {
	fmt.Fprintf(w, "**%s**\n\n_%s_\n\n", mdEscape(rep.Summary.Text), reportWindow(rep))
	head := reportMarkdownHeader
	fmt.Fprintf(w, "| %s |\n", strings.Join(head, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(head)))
	for i := range rep.Routes {
		cells := reportCells(&rep.Routes[i])
		for j := range cells[1:] {
			cells[j+1] = mdEscape(cells[j+1])
		}
		cells[0] = "`" + cells[0] + "`" // a route name has no backquote
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	ready := make([]string, len(rep.Summary.Ready))
	for i, r := range rep.Summary.Ready {
		ready[i] = "`" + r + "`"
	}
	fmt.Fprintf(w, "\n**Ready to move (%d):** %s\n", len(ready), listOrNone(ready))
	fmt.Fprintf(w, "\n**Blocked (%d):**", len(rep.Summary.Blocked))
	if len(rep.Summary.Blocked) == 0 {
		fmt.Fprint(w, " none")
	}
	fmt.Fprintln(w)
	for _, b := range rep.Summary.Blocked {
		fmt.Fprintf(w, "- `%s`: %s\n", b.Route, mdEscape(b.Why))
	}
}

func listOrNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, ", ")
}

// mdEscape keeps a cell's text from ending the cell or turning into
// markup.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "*", `\*`, "_", `\_`, "`", "\\`", "<", "&lt;").Replace(s)
}
