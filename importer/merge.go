package importer

import (
	"fmt"
	"strings"

	"github.com/natsgate/natsgate/routes"
	"go.yaml.in/yaml/v3"
)

// goneComment marks an existing route whose operation left the
// description. Merge writes it once and takes it away again if the
// operation comes back.
const goneComment = "# natsgate import: no operation in the description matches this route any more"

// existingRoute is a route of the existing file and where it stands.
type existingRoute struct {
	name, method, path, upstream string
	line                         int // 0-based line of its "-"
	key                          string
}

// Merge brings an existing config up to date with a description: every
// existing route is kept as written, byte for byte (its hand-edited
// fields and stage too); operations that no existing route serves (by
// method and chi pattern) are added before the catch-all; routes whose
// operation is gone get a comment and are listed in Result.Gone. The
// file is edited as text, line by line, so that comments and layout stay;
// merging the same description again changes nothing. existingFile names
// the existing file in errors. The merged config must pass routes.Load
// (with opts.LookupEnv) or Merge fails.
func Merge(existing []byte, existingFile string, spec []byte, specFile string, opts Options) (*Result, error) {
	explicitUpstream := opts.Upstream != ""
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s, err := readSpec(spec, specFile)
	if err != nil {
		return nil, err
	}
	// The loader's reading of each route (merge keys, ${VAR}s resolved)
	// is what Merge compares with the description; the YAML nodes only
	// say where each route stands in the text.
	loaded, err := routes.Load(existingFile, existing, opts.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("the existing config does not validate: %w", err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(existing, &root); err != nil {
		return nil, fmt.Errorf("%s: %v", existingFile, err)
	}
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a natsgate config (no mapping at the top)", existingFile)
	}
	doc := root.Content[0]
	var seq *yaml.Node
	nextKeyLine := -1 // 0-based line of the top-level key after routes
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "routes" {
			seq = doc.Content[i+1]
			if i+2 < len(doc.Content) {
				nextKeyLine = doc.Content[i+2].Line - 1
			}
		}
	}
	if seq == nil || seq.Kind != yaml.SequenceNode || seq.Style&yaml.FlowStyle != 0 || len(seq.Content) == 0 {
		return nil, fmt.Errorf("%s: routes must be a block list (\"- name: ...\") with at least one route", existingFile)
	}
	lines := strings.SplitAfter(string(existing), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	// Comments already in the file, whatever its line endings.
	hasLine := map[string]bool{}
	for _, l := range lines {
		hasLine[strings.TrimSpace(l)] = true
	}
	var ex []existingRoute
	taken := map[string]bool{}
	for _, item := range seq.Content {
		if item.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s:%d: each route must be a mapping", existingFile, item.Line)
		}
		r := existingRoute{name: scalar(item, "name"), method: strings.ToUpper(scalar(item, "method")), path: scalar(item, "path"), upstream: scalar(item, "upstream")}
		if r.method == "" {
			r.method = "*"
		}
		if len(loaded.Routes) == len(seq.Content) { // the loader's routes are the list's, in order
			lr := loaded.Routes[len(ex)]
			r.name, r.method, r.path, r.upstream = lr.Name, lr.Method, lr.Path, ""
			if lr.Upstream != nil {
				r.upstream = lr.Upstream.Name
			}
		}
		r.key = routeKey(r.method, r.path)
		r.line = item.Line - 1
		for r.line >= 0 && !strings.HasPrefix(strings.TrimSpace(lines[r.line]), "-") {
			r.line-- // the "-" stands on a line of its own
		}
		if r.line < 0 {
			return nil, fmt.Errorf("%s:%d: cannot find the \"-\" of this route", existingFile, item.Line)
		}
		taken[r.name] = true
		ex = append(ex, r)
	}
	dashLine := lines[ex[0].line]
	dash := dashLine[:len(dashLine)-len(strings.TrimLeft(dashLine, " "))]
	key := strings.Repeat(" ", seq.Content[0].Column-1)

	catchAll := -1
	for i, r := range ex {
		if r.method == "*" && r.path == "/*" {
			catchAll = i
		}
	}
	upstream := opts.Upstream
	if !explicitUpstream && catchAll >= 0 && ex[catchAll].upstream != "" {
		upstream = ex[catchAll].upstream
	}

	res := &Result{Operations: len(s.ops)}
	ps := plan(s, opts.SubjectPrefix)
	have := map[string]bool{}
	for _, r := range ex {
		have[r.key] = true
	}
	inSpec := map[string]bool{}
	var add strings.Builder
	for i := range ps {
		p := &ps[i]
		if p.skip != "" {
			res.Skipped = append(res.Skipped, Skipped{p.op.method, p.op.path, p.skip})
			c := skipComment(p, dash)
			if !hasLine[strings.TrimSpace(c)] {
				add.WriteString(c)
			}
			continue
		}
		inSpec[p.key] = true
		if have[p.key] {
			continue
		}
		r := nameRoute(p, taken)
		res.Routes = append(res.Routes, r)
		add.WriteString(renderRoute(r, upstream, dash, key))
	}

	// Edits by line: comments to add or take away above routes, and the
	// new routes at one place.
	drop := map[int]bool{}
	before := map[int]string{}
	for i, r := range ex {
		if i == catchAll {
			continue
		}
		marked := -1
		for l := r.line - 1; l >= 0 && strings.HasPrefix(strings.TrimSpace(lines[l]), "#"); l-- {
			if strings.TrimSpace(lines[l]) == goneComment {
				marked = l
			}
		}
		switch {
		case inSpec[r.key] && marked >= 0:
			drop[marked] = true
		case !inSpec[r.key]:
			res.Gone = append(res.Gone, r.name)
			if marked < 0 {
				before[r.line] += dash + goneComment + "\n"
			}
		}
	}
	at := len(lines)
	switch {
	case catchAll >= 0:
		at = ex[catchAll].line
		for at > 0 && strings.HasPrefix(strings.TrimSpace(lines[at-1]), "#") {
			at-- // above the catch-all's own comment
		}
		for at > 0 && strings.TrimSpace(lines[at-1]) == "" {
			at-- // and the blank lines before it: renderRoute starts with one
		}
	default:
		// Before the next top-level key, or the end of the document
		// ("..." or the next "---"): what follows is not the list.
		for l := ex[len(ex)-1].line + 1; l < len(lines); l++ {
			if l == nextKeyLine || docBoundary(lines[l]) {
				at = l
				break
			}
		}
		for at > 0 && at < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[at-1]), "#") {
			at--
		}
	}
	if add.Len() > 0 {
		before[at] = add.String() + before[at]
		if at == len(lines) && len(lines) > 0 && !strings.HasSuffix(lines[len(lines)-1], "\n") {
			lines[len(lines)-1] += "\n"
		}
	}
	var b strings.Builder
	for i := 0; i <= len(lines); i++ {
		b.WriteString(before[i])
		if i < len(lines) && !drop[i] {
			b.WriteString(lines[i])
		}
	}
	res.Config = []byte(b.String())
	if _, err := routes.Load(existingFile, res.Config, opts.LookupEnv); err != nil {
		return nil, fmt.Errorf("the merged config does not validate: %w", err)
	}
	return res, nil
}

// docBoundary reports whether a line ends the YAML document: "..." or
// the "---" that starts the next one.
func docBoundary(line string) bool {
	l := strings.TrimRight(line, " \t\r\n")
	return l == "..." || l == "---" || strings.HasPrefix(l, "... ") || strings.HasPrefix(l, "--- ")
}

// scalar is a mapping's value for key, or "" if it has none.
func scalar(m *yaml.Node, key string) string {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.ScalarNode {
			return m.Content[i+1].Value
		}
	}
	return ""
}
