package routes

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// MaxExpandedNodes bounds the YAML nodes a configuration file may stand for
// once every alias and merge key ("<<: *base") is expanded. A real file,
// however many routes share blocks through anchors, is far below it; a few
// hundred bytes of anchors that each repeat the one before (a "billion
// laughs") are far above it, and are refused before anything walks them.
const MaxExpandedNodes = 100_000

// MaxAliasDepth bounds how deeply aliases may nest: an anchor whose value
// holds an alias to an anchor whose value holds an alias, and so on. Shared
// blocks built on shared blocks rarely go past three.
const MaxAliasDepth = 20

// checkExpansion refuses a document whose aliases expand past
// MaxExpandedNodes or nest past MaxAliasDepth. The count is made on the
// parsed node tree with each anchor's expanded size memoised, so it costs
// one pass over the file however much the file would expand to. The error
// names the line of the alias that crosses the limit.
func checkExpansion(file string, doc *yaml.Node) error {
	x := expansion{measured: map[*yaml.Node]measure{}, busy: map[*yaml.Node]bool{}}
	alias, path, msg := x.find(doc, "")
	if alias == nil {
		return nil
	}
	src := &source{file: file, positions: map[string]position{}}
	e := src.fieldError(nil, path, alias.Line, msg)
	if i, ok := routeIndexOf(path); ok {
		if name := writtenRouteName(doc, i); name != "" {
			e.Route = clip(name)
		}
	}
	return e
}

// measure is what a node expands to: its node count (saturated just past
// MaxExpandedNodes, so that it cannot overflow) and the deepest nesting of
// aliases within it.
type measure struct{ nodes, depth int }

type expansion struct {
	measured map[*yaml.Node]measure // per collection, so each anchor is measured once
	busy     map[*yaml.Node]bool    // collections being measured: an alias back to one is a cycle
	total    int                    // nodes met so far by find, in file order
}

// measure returns what n expands to. An alias back into a collection still
// being measured ("n: &n {<<: *n}") counts as one node: the walker and the
// decoder report the cycle itself.
func (x *expansion) measure(n *yaml.Node) measure {
	switch {
	case n.Kind == yaml.AliasNode:
		if n.Alias == nil {
			return measure{1, 0}
		}
		m := x.measure(n.Alias)
		return measure{m.nodes, m.depth + 1}
	case len(n.Content) == 0:
		return measure{1, 0}
	}
	if m, ok := x.measured[n]; ok {
		return m
	}
	if x.busy[n] {
		return measure{1, 0}
	}
	x.busy[n] = true
	m := measure{1, 0}
	for _, c := range n.Content {
		cm := x.measure(c)
		m.nodes = min(m.nodes+cm.nodes, MaxExpandedNodes+1)
		m.depth = max(m.depth, cm.depth)
	}
	delete(x.busy, n)
	x.measured[n] = m
	return m
}

// find goes through the document as written, in file order, adding up the
// nodes each part expands to. It returns the first alias that nests too
// deeply or takes the total past MaxExpandedNodes (or, for a file that is
// itself that large, the node that does), with the field path it stands at
// and the problem.
func (x *expansion) find(n *yaml.Node, path string) (*yaml.Node, string, string) {
	if n.Kind == yaml.AliasNode {
		m := x.measure(n)
		if m.depth > MaxAliasDepth {
			return n, path, fmt.Sprintf("alias *%s nests aliases %d deep; at most %d are allowed", clip(n.Value), m.depth, MaxAliasDepth)
		}
		x.total += m.nodes
		if x.total > MaxExpandedNodes {
			return n, path, fmt.Sprintf("alias *%s takes the file past %d YAML nodes once aliases and merge keys are expanded; share blocks less deeply", clip(n.Value), MaxExpandedNodes)
		}
		return nil, "", ""
	}
	x.total++
	if x.total > MaxExpandedNodes {
		return n, path, fmt.Sprintf("the file has more than %d YAML nodes", MaxExpandedNodes)
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if found, p, msg := x.find(k, path); found != nil {
				return found, p, msg
			}
			if isMergeKey(k) && v.Kind == yaml.SequenceNode {
				// "<<: [*a, *b]": what is merged stands at the mapping's
				// own path, as the walker reports it.
				x.total++
				for _, m := range v.Content {
					if found, p, msg := x.find(m, path); found != nil {
						return found, p, msg
					}
				}
				continue
			}
			child := path
			if !isMergeKey(k) {
				child = joinPath(path, k.Value)
			}
			if found, p, msg := x.find(v, child); found != nil {
				return found, p, msg
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if found, p, msg := x.find(c, fmt.Sprintf("%s[%d]", path, i)); found != nil {
				return found, p, msg
			}
		}
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if found, p, msg := x.find(c, path); found != nil {
				return found, p, msg
			}
		}
	}
	return nil, "", ""
}

// routeIndexOf returns i for a path inside routes[i].
func routeIndexOf(path string) (int, bool) {
	m := routeIndex.FindStringSubmatch(path)
	if m == nil {
		return 0, false
	}
	i, err := strconv.Atoi(m[1])
	return i, err == nil
}

// writtenRouteName reads routes[i].name from the document as written, for errors
// found before the walk has recorded where each field stands.
func writtenRouteName(doc *yaml.Node, i int) string {
	seq := mappingValue(doc, "routes")
	if seq == nil || seq.Kind != yaml.SequenceNode || i >= len(seq.Content) {
		return ""
	}
	if name := mappingValue(seq.Content[i], "name"); name != nil && name.Kind == yaml.ScalarNode {
		return name.Value
	}
	return ""
}

// mappingValue returns the value of key in mapping n, following aliases.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			v := n.Content[i+1]
			if v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}

// maxQuoted bounds a value quoted in a problem message: a value can be
// anything a variable or an alias put there, and one problem must not make
// a log line megabytes long.
const maxQuoted = 80

// clip cuts s to maxQuoted bytes, on a character boundary, marking the cut
// with "…".
func clip(s string) string {
	return clipTo(s, maxQuoted)
}

func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// clipArgs clips every string among a message's arguments.
func clipArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if s, ok := a.(string); ok {
			a = clip(s)
		}
		out[i] = a
	}
	return out
}

// isMergeKey reports a "<<" key, which brings in the keys of the mapping or
// mappings it names rather than naming a field.
func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Tag == "!!merge"
}
