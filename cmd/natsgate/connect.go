package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/natsgate/natsgate/gateway"
	"github.com/natsgate/natsgate/routes"
)

// responderColumn fills `natsgate routes`' RESPONDERS column: it connects
// to the config's NATS briefly, as the stages column does, and looks at
// the micro services once. Offline, or for a route without a NATS side,
// the column shows "-".
func responderColumn(t *routes.Table, stderr io.Writer) func(*routes.Route) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	found, err := gateway.DiscoverResponders(ctx, t)
	if err != nil {
		fmt.Fprintf(stderr, "natsgate routes: cannot look for responders (%v): the column shows -\n", err)
	}
	return func(r *routes.Route) string {
		if rs := found[r.Name]; rs != nil {
			return fmt.Sprint(rs.Count)
		}
		return "-"
	}
}

// validateConnect prints what the config's NATS system has for each
// route. It exits 0 when it could look, whatever it found, so a report
// never fails a pipeline by surprise; with strict, 1 when something a
// move to NATS needs is missing. Not reaching NATS is 1: the check asked
// for could not run.
func validateConnect(t *routes.Table, strict bool, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := gateway.CheckConnect(ctx, t)
	if err != nil {
		fmt.Fprintln(stderr, "natsgate validate --connect:", err)
		return 1
	}
	fmt.Fprint(stdout, formatReport(rep))
	if strict && !rep.OK() {
		fmt.Fprintln(stderr, "natsgate validate --connect --strict: some routes lack what a move to NATS needs")
		return 1
	}
	return 0
}

// formatReport writes a ConnectReport as the command prints it.
func formatReport(rep *gateway.ConnectReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "connected to %s\n", rep.URL)
	if rep.CutoverErr != nil {
		fmt.Fprintf(&b, "cutover bucket %s: MISSING (%v)\n", rep.CutoverBucket, rep.CutoverErr)
	} else {
		fmt.Fprintf(&b, "cutover bucket %s: ok\n", rep.CutoverBucket)
	}
	fmt.Fprintf(&b, "%-20s %-10s %-30s %-10s %s\n", "ROUTE", "PATTERN", "SUBJECT", "RESPONDERS", "READY")
	for _, rc := range rep.Routes {
		if rc.Subject == "" {
			fmt.Fprintf(&b, "%-20s %-10s %-30s %-10s %s\n", rc.Name, "-", "-", "-", "legacy only")
			continue
		}
		var who []string
		for _, s := range rc.Responders.Services {
			who = append(who, fmt.Sprintf("%s %s x%d (%s)", s.Name, s.Version, s.Instances, s.Endpoint))
		}
		ready := "ok"
		switch {
		case rc.Problem != "":
			ready = "NO: " + rc.Problem
		case len(rc.Streams) > 0:
			ready = "ok: stream " + strings.Join(rc.Streams, ", ")
		case rc.Pattern == routes.Publish:
			ready = "ok: publish needs no responder"
		}
		if len(who) > 0 {
			ready += "; " + strings.Join(who, ", ")
		}
		fmt.Fprintf(&b, "%-20s %-10s %-30s %-10d %s\n", rc.Name, rc.Pattern, rc.Subject, rc.Responders.Count, ready)
	}
	for _, c := range rep.Claims {
		fmt.Fprintf(&b, "discovered, not routed: %s %s endpoint %s on %s x%d: %s; suggested route: {name: %s, method: %s, path: %q, nats: {subject: %q, pattern: %s}}\n",
			c.Service, c.Version, c.Endpoint, c.Subject, c.Instances, c.Reason,
			c.Suggested.Name, c.Suggested.Method, c.Suggested.Path, c.Suggested.NATS.Subject, c.Suggested.NATS.Pattern)
	}
	fmt.Fprintln(&b, "responders are NATS micro services ($SRV.INFO); plain subscribers cannot be seen")
	return b.String()
}
