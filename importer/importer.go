// Package importer turns an API description (OpenAPI 3.0 or 3.1, or
// Swagger 2.0, in YAML or JSON) into a natsgate configuration to start a
// migration from: one route per operation, every one still answered by
// the legacy upstream (cutover: legacy), each with the NATS subject a
// worker will answer it on once it moves, and a catch-all to the upstream
// last. Merge brings a config written that way (and edited since) up to
// date with a newer description without touching what was edited.
//
// The package is pure: it reads the bytes it is given, never a file or
// the network. Every config it returns has passed routes.Load, the check
// `natsgate validate` makes.
package importer

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/natsgate/natsgate/routes"
)

// Options say what the description does not.
type Options struct {
	// Upstream names the legacy service every route proxies to.
	// Default "legacy" (Merge: the existing catch-all's upstream).
	Upstream string
	// UpstreamURL is where the legacy service listens. Default: the
	// scheme and host of the description's first server, else
	// http://127.0.0.1:8081 with a comment to set it.
	UpstreamURL string
	// SubjectPrefix starts every subject: NATS tokens joined by dots.
	// Default "api".
	SubjectPrefix string
	// LookupEnv resolves ${VAR} when Merge checks the merged file, as
	// natsgate validate would (pass os.LookupEnv). Default: every
	// variable unset.
	LookupEnv func(string) (string, bool)
}

// Defaults of Options.
const (
	DefaultUpstream      = "legacy"
	DefaultUpstreamURL   = "http://127.0.0.1:8081"
	DefaultSubjectPrefix = "api"
	catchAllName         = "legacy-rest"
)

// Route is one operation made a route.
type Route struct {
	Name, Method, Path, Subject string
	Summary                     string
	SpecPath                    string // the path as the description writes it
}

// Skipped is an operation left out, with the reason; the config holds it
// as a comment.
type Skipped struct {
	Method, Path, Reason string
}

func (s Skipped) String() string { return fmt.Sprintf("%s %s: %s", s.Method, s.Path, s.Reason) }

// Result is a config and what went into it.
type Result struct {
	// Config is the YAML text, comments and all.
	Config []byte
	// Operations counts the description's operations: every one is a
	// route or Skipped.
	Operations int
	// Routes are the operations imported, in the description's order
	// (Merge: only those it added).
	Routes []Route
	// Skipped lists operations left out and why.
	Skipped []Skipped
	// Gone names existing routes whose operation left the description
	// (Merge only).
	Gone []string
}

// planned is an operation with everything but its name derived.
type planned struct {
	op      specOp
	pattern string
	subject string
	key     string
	segs    []segment
	skip    string // reason, when left out
}

// plan derives each operation's chi pattern, subject and route key, and
// marks those natsgate cannot serve: a method it does not route, a path
// chi refuses or that maps to a route already taken, a subject too long.
func plan(s *apiSpec, prefix string) []planned {
	var out []planned
	seen := map[string]string{} // route key -> method and path of the first
	mux := chi.NewRouter()
	for _, op := range s.ops {
		p := planned{op: op}
		out = append(out, p)
		pp := &out[len(out)-1]
		switch op.method {
		case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
		default:
			pp.skip = fmt.Sprintf("natsgate routes no %s", op.method)
			continue
		}
		segs, err := parsePath(op.path)
		if err != nil {
			pp.skip = err.Error()
			continue
		}
		pp.segs = segs
		pp.pattern = chiPattern(s.basePath, segs)
		pp.subject = subjectFor(prefix, segs, op.method)
		pp.key = routeKey(op.method, pp.pattern)
		if first, dup := seen[pp.key]; dup {
			pp.skip = fmt.Sprintf("chi serves it as the same route as %s", first)
			continue
		}
		if err := chiAccepts(mux, op.method, pp.pattern); err != nil {
			pp.skip = err.Error()
			continue
		}
		if sub, err := routes.ParseSubject(pp.subject); err != nil {
			pp.skip = err.Error()
			continue
		} else if sub.IsLiteral() && len(pp.subject) > routes.DefaultMaxSubject {
			pp.skip = fmt.Sprintf("its subject %s is longer than %d bytes", pp.subject, routes.DefaultMaxSubject)
			continue
		}
		seen[pp.key] = op.method + " " + op.path
	}
	// The catch-all goes last; chi must take it after the rest.
	if err := chiAccepts(mux, "*", "/*"); err != nil {
		for i := range out {
			if out[i].skip == "" {
				out[i].skip = err.Error()
			}
		}
	}
	return out
}

// chiAccepts registers the pattern on a scratch router, as routes.Compile
// does: chi panics on a pattern it cannot route.
func chiAccepts(mux chi.Router, method, pattern string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("chi cannot route %q: %v", pattern, p)
		}
	}()
	noop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if method == "*" {
		mux.Handle(pattern, noop)
	} else {
		mux.Method(method, pattern, noop)
	}
	return nil
}

func (o *Options) fill() error {
	if o.Upstream == "" {
		o.Upstream = DefaultUpstream
	}
	if !validName(o.Upstream) {
		return fmt.Errorf("upstream name %q: use letters, digits, '-', '_' and '.'", o.Upstream)
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = DefaultSubjectPrefix
	}
	if err := checkPrefix(o.SubjectPrefix); err != nil {
		return err
	}
	if o.UpstreamURL != "" {
		u, err := url.Parse(o.UpstreamURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("upstream URL %q: want http or https, a host, no query", o.UpstreamURL)
		}
	}
	if o.LookupEnv == nil {
		o.LookupEnv = func(string) (string, bool) { return "", false }
	}
	return nil
}

func validName(s string) bool { return s != "" && cleanName(s) == s }

// Import reads a description and writes the config to start from. file
// names the description in errors (a *SpecError, with the line when the
// reader gives one) and in the config's first comment.
func Import(spec []byte, file string, opts Options) (*Result, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s, err := readSpec(spec, file)
	if err != nil {
		return nil, err
	}
	res := &Result{Operations: len(s.ops)}
	ps := plan(s, opts.SubjectPrefix)
	taken := map[string]bool{}
	var body strings.Builder
	for i := range ps {
		p := &ps[i]
		if p.skip != "" {
			res.Skipped = append(res.Skipped, Skipped{p.op.method, p.op.path, p.skip})
			body.WriteString(skipComment(p, "  "))
			continue
		}
		r := nameRoute(p, taken)
		res.Routes = append(res.Routes, r)
		body.WriteString(renderRoute(r, opts.Upstream, "  ", "    "))
	}
	url, urlNote := opts.UpstreamURL, "from --upstream"
	switch {
	case url != "":
	case s.serverURL != "":
		url, urlNote = s.serverURL, "the description's first server"
	default:
		url, urlNote = DefaultUpstreamURL, "the description names no server: set the legacy service's address"
	}
	var b strings.Builder
	title := strings.TrimSpace(s.title + " " + s.version)
	if title == "" {
		title = "an API"
	}
	fmt.Fprintf(&b, "# natsgate config for %s, imported from %s (%s) by\n", oneLine(title, 80), oneLine(file, 120), s.format)
	b.WriteString(`# natsgate import openapi. Every route is still answered by the legacy
# upstream (cutover: legacy); nats.subject is where a worker answers it
# once it moves to NATS. Without nats.url natsgate starts an embedded NATS
# server. 'natsgate import openapi SPEC --merge THIS_FILE' adds operations
# that are new in SPEC and keeps what you have edited here.
`)
	fmt.Fprintf(&b, "upstreams:\n  %s:\n    url: %s # %s\nroutes:\n", opts.Upstream, quote(url), urlNote)
	b.WriteString(body.String())
	b.WriteString(renderCatchAll(catchAllName, taken, opts.Upstream, "  ", "    "))
	res.Config = []byte(b.String())
	if _, err := routes.Load(file+" (imported)", res.Config, opts.LookupEnv); err != nil {
		return nil, fmt.Errorf("the imported config does not validate: %w", err)
	}
	return res, nil
}

// nameRoute names a planned operation, uniquely among taken.
func nameRoute(p *planned, taken map[string]bool) Route {
	name := routeNameFor(p.op.operationID, p.op.method, p.segs)
	if name == "" {
		name = "operation"
	}
	return Route{
		Name: uniqueName(name, taken), Method: p.op.method, Path: p.pattern,
		Subject: p.subject, Summary: p.op.summary, SpecPath: p.op.path,
	}
}

// renderRoute writes one route as a block sequence item: dash is the
// indentation of its "-", key that of its keys.
func renderRoute(r Route, upstream, dash, key string) string {
	var b strings.Builder
	b.WriteString("\n")
	head := r.Method + " " + r.SpecPath
	if s := oneLine(r.Summary, 160); s != "" {
		head += ": " + s
	}
	fmt.Fprintf(&b, "%s# %s\n", dash, oneLine(head, 240))
	// The first key stands where the others do: a file written
	// "-   name:" has its keys further in than "- ".
	lead := dash + "- "
	if len(key) > len(lead) {
		lead = dash + "-" + strings.Repeat(" ", len(key)-len(dash)-1)
	}
	fmt.Fprintf(&b, "%sname: %s\n", lead, quote(r.Name))
	fmt.Fprintf(&b, "%smethod: %s\n", key, r.Method)
	fmt.Fprintf(&b, "%spath: %s\n", key, quote(r.Path))
	fmt.Fprintf(&b, "%snats:\n%s  subject: %s\n", key, key, quote(r.Subject))
	fmt.Fprintf(&b, "%supstream: %s\n", key, quote(upstream))
	fmt.Fprintf(&b, "%scutover: legacy\n", key)
	return b.String()
}

func renderCatchAll(name string, taken map[string]bool, upstream, dash, key string) string {
	return fmt.Sprintf("\n%s# Every path the description does not list passes through to the upstream.\n"+
		"%s- name: %s\n%smethod: \"*\"\n%spath: /*\n%supstream: %s\n",
		dash, dash, uniqueName(name, taken), key, key, key, quote(upstream))
}

// skipComment is the comment that stands for an operation left out.
func skipComment(p *planned, dash string) string {
	return fmt.Sprintf("\n%s# not imported: %s\n", dash, oneLine(Skipped{p.op.method, p.op.path, p.skip}.String(), 400))
}

// oneLine makes text fit on one comment line: white space and control
// characters folded to single spaces, at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r <= ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x2028 || r == 0x2029
	}), " ")
	if len(s) > n {
		cut := n
		for cut > 0 && s[cut]&0xC0 == 0x80 { // not inside a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}

// plainSafe reports whether s reads back as the same string unquoted.
func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
		return false
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return false
	}
	if !strings.ContainsAny(s[:1], "/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") {
		return false
	}
	for _, c := range s {
		if !(c == '/' || c == '{' || c == '}' || c == '.' || c == '-' || c == '_' ||
			c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// quote writes a YAML scalar: plain when nothing in it means anything to
// YAML, else double-quoted (a JSON string is a YAML double-quoted one).
func quote(s string) string {
	if plainSafe(s) {
		return s
	}
	return strconv.Quote(s)
}
