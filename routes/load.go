package routes

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ErrInvalidConfig is wrapped by every configuration error, so callers can
// tell a bad file from other failures with errors.Is.
var ErrInvalidConfig = errors.New("invalid configuration")

// FieldError is one problem in a configuration file.
type FieldError struct {
	File  string // the file, as it was named to Parse
	Line  int    // 1-based; 0 when the field is absent from the file
	Route string // the route's name, or "" outside routes
	Field string // dotted path of the field, relative to the route if any
	Msg   string

	more int // > 0: this stands for that many problems left out of a report
}

// Bounds on what one problem quotes, so that a report of MaxProblems stays
// a few KiB: a route name or a field path can be as long as the file.
const (
	maxRouteQuoted = 80
	maxFieldQuoted = 120
	maxProblemLen  = 480
)

func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Route != "" {
		fmt.Fprintf(&b, "route %q: ", clipTo(e.Route, maxRouteQuoted))
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "%s: ", clipTo(e.Field, maxFieldQuoted))
	}
	b.WriteString(e.Msg)
	return clipTo(b.String(), maxProblemLen)
}

// Unwrap lets errors.Is(err, ErrInvalidConfig) hold for every FieldError.
func (e *FieldError) Unwrap() error { return ErrInvalidConfig }

// position is where a value stands in the file.
type position struct {
	line, column int
	value        string
}

// source remembers where each field was written, so that problems found
// after decoding (in Compile) still name the line.
type source struct {
	file      string
	data      []byte              // the file as read, to quote a line in a hint
	positions map[string]position // "routes[2].nats.timeout" -> position of the value
	keyOrder  []string            // paths in file order, to match yaml's type errors by line
}

// Parse reads a configuration file's bytes. file names it in errors.
// lookupEnv resolves ${VAR} references (os.LookupEnv in production); an
// unset variable is an error. It also supplies NATS_URL, used when the
// file has no nats.url, and NATS_CONTEXT; a natscli context can be read
// only through LoadEnv, which is given a way to read one. Parse reports
// every problem it finds, each a
// *FieldError, joined; all wrap ErrInvalidConfig. Unless the YAML itself is
// malformed, the config is returned even with an error, its bad fields zero.
func Parse(file string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(file, data, Env{Lookup: lookupEnv})
}

// parse is Parse with everything outside the file it may read: the
// environment, and natscli contexts (see resolveNATS).
func parse(file string, data []byte, env Env) (*Config, error) {
	lookupEnv := env.lookup
	src := &source{file: file, data: data, positions: map[string]position{}}
	cfg := &Config{}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, syntaxError(file, data, err)
	}
	if len(root.Content) == 0 {
		return nil, &FieldError{File: file, Msg: "the file is empty"}
	}
	// Bound what aliases and merge keys expand to before anything walks or
	// decodes the tree: both visit an alias's target once per alias, so a
	// few hundred bytes of nested anchors would otherwise cost minutes.
	if err := checkExpansion(file, root.Content[0]); err != nil {
		return nil, err
	}
	var errs []error
	w := walker{src: src, lookupEnv: lookupEnv, errs: &errs, expanded: map[*yaml.Node]bool{}, active: map[walkKey]bool{}}
	w.walk(root.Content[0], reflect.TypeFor[Config](), "")
	if err := root.Content[0].Decode(cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			errs = append(errs, &FieldError{File: file, Msg: cleanYAMLError(err.Error())})
		} else {
			for _, msg := range te.Errors {
				errs = append(errs, src.typeError(cfg, msg))
			}
		}
	}
	cfg.src = src
	errs = append(errs, resolveNATS(cfg, env)...)
	if len(errs) > 0 {
		// The config is returned all the same, with the bad fields left
		// zero, so that Load can go on to report Compile's problems too.
		return cfg, joinSorted(errs)
	}
	return cfg, nil
}

// walker visits the YAML tree before it is decoded: it expands ${VAR},
// records where each field stands, and reports keys the schema lacks.
type walker struct {
	src       *source
	lookupEnv func(string) (string, bool)
	errs      *[]error
	// expanded holds the scalars already expanded: a node reached again
	// through an alias must not be expanded a second time, or a variable's
	// value holding "${...}" would be expanded in turn.
	expanded map[*yaml.Node]bool
	// active holds the collections being walked, each with the type it is
	// read as: an alias back to one of them, read as the same type again
	// ("nats: &n {<<: *n}"), is a cycle, left to the decoder to report
	// instead of walked forever.
	active map[walkKey]bool
}

type walkKey struct {
	n *yaml.Node
	t reflect.Type
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

func (w walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		key := walkKey{n, t}
		if w.active[key] {
			return
		}
		w.active[key] = true
		defer delete(w.active, key)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		w.expand(n, path)
		w.record(path, n)
		// yaml.v3 truncates a fraction decoded into an int (2.5 becomes 2)
		// without a word; a whole-number field refuses it here instead.
		if isWholeNumber(t) && n.ShortTag() == "!!float" {
			*w.errs = append(*w.errs, w.src.fieldError(nil, path, n.Line, fmt.Sprintf("%s is not a whole number", clip(n.Value))))
		}
	case yaml.MappingNode:
		w.record(path, n)
		switch t.Kind() {
		case reflect.Struct:
			w.walkFields(n, t, path)
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				w.walk(v, t.Elem(), joinPath(path, k.Value))
			}
		}
	case yaml.SequenceNode:
		if commaLists[path] && t.Kind() == reflect.String {
			w.joinList(n, path)
			return
		}
		w.record(path, n)
		if t.Kind() == reflect.Slice {
			for i, item := range n.Content {
				w.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
}

// walkFields visits the keys of a mapping decoded into a struct. A merge
// key ("<<: *base") brings in the keys of the mapping, or mappings, it
// names, as the decoder will.
func (w walker) walkFields(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merged := []*yaml.Node{v}
			if v.Kind == yaml.SequenceNode {
				merged = v.Content
			}
			for _, m := range merged {
				if m.Kind == yaml.AliasNode && m.Alias != nil {
					m = m.Alias
				}
				if key := (walkKey{m, t}); m.Kind == yaml.MappingNode && !w.active[key] {
					w.active[key] = true
					w.walkFields(m, t, path)
					delete(w.active, key)
				}
			}
			continue
		}
		child := joinPath(path, k.Value)
		f, ok := fields[k.Value]
		if !ok {
			*w.errs = append(*w.errs, w.src.fieldError(nil, child, k.Line, "unknown field"+suggest(k.Value, fields)))
			continue
		}
		w.walk(v, f, child)
	}
}

// commaLists are the string fields that may be written as a YAML list
// instead of a comma-separated string ("nats.url: [nats://a, nats://b]").
var commaLists = map[string]bool{"nats.url": true}

// joinList turns a list written for a comma-separated string field into
// that string, in place, before the tree is decoded: each item is
// expanded and recorded at its own line, so that a bad one is reported
// there; an item that is not a single value is reported and left out.
func (w walker) joinList(n *yaml.Node, path string) {
	w.record(path, n)
	items := make([]string, 0, len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		if item.Kind == yaml.AliasNode && item.Alias != nil {
			item = item.Alias
		}
		if item.Kind != yaml.ScalarNode {
			*w.errs = append(*w.errs, w.src.fieldError(nil, p, item.Line, "a list item here must be a single value"))
			continue
		}
		w.expand(item, p)
		w.record(p, item)
		if strings.TrimSpace(item.Value) == "" {
			// Left in, it would join to "" (no URL: the embedded server)
			// or to an empty item of the list.
			*w.errs = append(*w.errs, w.src.fieldError(nil, p, item.Line, "an empty item names no server"))
			continue
		}
		items = append(items, item.Value)
	}
	if len(n.Content) == 0 {
		*w.errs = append(*w.errs, w.src.fieldError(nil, path, n.Line, "an empty list names no server: leave the field out for the default"))
	}
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: strings.Join(items, ","), Line: n.Line, Column: n.Column}
}

func (w walker) record(path string, n *yaml.Node) {
	if path == "" {
		return
	}
	w.src.positions[path] = position{line: n.Line, column: n.Column, value: n.Value}
	w.src.keyOrder = append(w.src.keyOrder, path)
}

// expand replaces ${VAR} in a scalar with the variable's value. Only plain
// and quoted scalars are expanded, and the node keeps its line.
func (w walker) expand(n *yaml.Node, path string) {
	if w.expanded[n] || !strings.Contains(n.Value, "${") {
		return
	}
	w.expanded[n] = true
	n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
		name := ref[2 : len(ref)-1]
		v, ok := w.lookupEnv(name)
		if !ok {
			*w.errs = append(*w.errs, w.src.fieldError(nil, path, n.Line, fmt.Sprintf("environment variable %s is not set", clip(name))))
		}
		return v
	})
	// A quoted or explicitly tagged value stays a string. The parser gives
	// a plain scalar the tag it resolved ("!!str" for "${N}"), so clear it
	// to let yaml resolve the expanded text (an int, a bool) anew.
	if n.Style != 0 {
		return
	}
	n.Tag = ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps each yaml key of struct t to its field's type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		out[tag] = f.Type
	}
	return out
}

// suggest names the closest known key, for typos like "timout".
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestDist := "", 3
	for k := range fields {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var routeIndex = regexp.MustCompile(`^routes\[(\d+)\]\.?`)

// fieldError builds a FieldError for a field path, naming the route when the
// path is inside one. line 0 means: look the path up.
func (s *source) fieldError(cfg *Config, path string, line int, msg string) *FieldError {
	if line == 0 {
		line = s.lineOf(path)
	}
	e := &FieldError{File: s.file, Line: line, Field: path, Msg: msg}
	if m := routeIndex.FindStringSubmatch(path); m != nil {
		i, _ := strconv.Atoi(m[1])
		e.Field = strings.TrimPrefix(path, m[0])
		e.Route = fmt.Sprintf("#%d", i+1)
		if cfg != nil && i < len(cfg.Routes) && cfg.Routes[i].Name != "" {
			e.Route = cfg.Routes[i].Name
		} else if p, ok := s.positions[fmt.Sprintf("routes[%d].name", i)]; ok && p.value != "" {
			e.Route = p.value
		}
	}
	return e
}

// lineOf finds the line of a field, or of its nearest written parent.
func (s *source) lineOf(path string) int {
	for path != "" {
		if p, ok := s.positions[path]; ok {
			return p.line
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

// typeError turns one of yaml's "line N: cannot unmarshal ..." messages into
// a FieldError, finding the field by its line (and by its value where a flow
// mapping puts several fields on one line).
func (s *source) typeError(cfg *Config, msg string) *FieldError {
	line := yamlErrorLine(msg)
	msg = cleanYAMLError(msg)
	// A scalar on the line whose value the message quotes is the field; a
	// mapping or sequence where a scalar belongs ("method: [GET]") is the
	// last (innermost) collection on the line.
	collection := strings.Contains(msg, "!!seq") || strings.Contains(msg, "!!map")
	scalarPath, collectionPath := "", ""
	for _, p := range s.keyOrder {
		pos := s.positions[p]
		if pos.line != line {
			continue
		}
		if pos.value == "" {
			collectionPath = p
			continue
		}
		if scalarPath == "" || strings.Contains(msg, strconv.Quote(clip(pos.value))) || strings.Contains(msg, "`"+pos.value+"`") {
			scalarPath = p
		}
	}
	path := scalarPath
	if path == "" || (collection && collectionPath != "") {
		path = collectionPath
	}
	msg = typeErrorInWords(msg)
	if strings.Contains(msg, "a mapping where one value belongs") {
		msg += templateHint(s.line(line))
	}
	return s.fieldError(cfg, path, line, msg)
}

// line returns line n (1-based) of the file, "" when there is none.
func (s *source) line(n int) string {
	return lineOf(s.data, n)
}

func lineOf(data []byte, n int) string {
	if n < 1 {
		return ""
	}
	for i := 1; i < n; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return ""
		}
		data = data[j+1:]
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	return string(data)
}

var yamlTypeError = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")

// typeErrorInWords says one of yaml's "cannot unmarshal !!str `five` into
// int" in the words of the file's author: `"five" is not a number`. A
// message of another shape is returned as it is.
func typeErrorInWords(msg string) string {
	m := yamlTypeError.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	tag, value, into := m[1], m[2], m[3]
	written := map[string]string{"seq": "a list", "map": "a mapping"}[tag]
	if written == "" {
		written = strconv.Quote(value)
	}
	switch {
	case strings.HasPrefix(into, "int") || strings.HasPrefix(into, "uint"):
		switch tag {
		case "float":
			return value + " is not a whole number"
		case "int":
			return value + " is out of range here"
		case "seq", "map":
			return written + " where a number belongs"
		}
		return written + " is not a number"
	case strings.HasPrefix(into, "float"):
		if tag == "seq" || tag == "map" {
			return written + " where a number belongs"
		}
		return written + " is not a number"
	case into == "bool":
		if tag == "seq" || tag == "map" {
			return written + " where true or false belongs"
		}
		return written + " is not true or false"
	case into == "string":
		return written + " where one value belongs"
	case strings.HasPrefix(into, "[]"):
		return written + " where a list belongs"
	}
	return written + " where a mapping belongs"
}

// isWholeNumber says whether t is read as a plain integer (not a type
// with its own reading, like Duration or ByteSize).
func isWholeNumber(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return !reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]())
	}
	return false
}

// syntaxError reports a file the YAML parser rejects. yaml.v3 names the
// line where the enclosing list or mapping began (as a 0-based number, for
// a parser error), not where the problem is: a bad indent on line 40 of a
// routes list is reported at line 1. The problem's line is the shortest
// run of the file's first lines that fails with the same message: the
// parser reads in order and stops at the problem, so every longer run
// fails there too, and shorter ones parse or fail otherwise. A binary
// search finds it in a few parses, however long the file.
func syntaxError(file string, data []byte, err error) *FieldError {
	msg := cleanYAMLError(err.Error())
	var ends []int // ends[k-1] is the offset just past line k
	for off := 0; off < len(data); {
		j := bytes.IndexByte(data[off:], '\n')
		if j < 0 {
			off = len(data)
		} else {
			off += j + 1
		}
		ends = append(ends, off)
	}
	from := max(yamlErrorLine(err.Error()), 1) - 1 // the problem is not before what yaml named
	line := yamlErrorLine(err.Error())
	if from < len(ends) {
		i := sort.Search(len(ends)-from, func(i int) bool {
			var n yaml.Node
			perr := yaml.Unmarshal(data[:ends[from+i]], &n)
			return perr != nil && cleanYAMLError(perr.Error()) == msg
		})
		if from+i < len(ends) {
			line = from + i + 1
		}
	}
	if strings.HasPrefix(msg, "did not find expected ',' or") {
		msg += templateHint(lineOf(data, line))
	}
	msg += tabHint(lineOf(data, line))
	return &FieldError{File: file, Line: line, Msg: msg}
}

// tabHint is the advice for a line indented with a tab, which YAML
// rejects in words ("found character that cannot start any token") that
// do not name the tab, invisible in most editors. It is "" when the
// line's indentation has no tab.
func tabHint(line string) string {
	indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
	if !strings.Contains(indent, "\t") {
		return ""
	}
	return "; the line is indented with a tab: YAML indents with spaces only"
}

// flowTemplate finds a plain (unquoted) value holding a {param} template:
// a.{id}, /users/{id}, {id}.get.
var flowTemplate = regexp.MustCompile(`(?:^|[\s,{\[])([^\s'",\[\]{}:#]*\{[A-Za-z_][A-Za-z0-9_]*\}[^\s'",\[\]#]*)`)

// templateHint is the advice for a line where an unquoted {…} template
// was read as YAML's flow mapping: quote it. It is "" when the line has no
// such template.
func templateHint(line string) string {
	if m := flowTemplate.FindStringSubmatch(line); m != nil {
		v := m[1]
		// The value ends before the braces that close the mappings
		// around it: a.{id}}} is a.{id} inside two.
		for strings.HasSuffix(v, "}") && strings.Count(v, "}") > strings.Count(v, "{") {
			v = v[:len(v)-1]
		}
		return fmt.Sprintf("; a value with a {…} template must be quoted: %q", v)
	}
	return ""
}

func yamlErrorLine(msg string) int {
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func cleanYAMLError(msg string) string {
	msg = strings.TrimPrefix(msg, "yaml: ")
	msg = yamlLine.ReplaceAllString(msg, "")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	return strings.TrimSpace(msg)
}

// MaxProblems bounds the problems one report lists; the rest are counted
// in a last line ("and 12 more problems"), so that a reload failure stays
// one log line of a few KiB.
const MaxProblems = 16

// joinSorted joins errors in file order, so the report reads top to bottom,
// keeping the first MaxProblems and counting the rest. A count already in
// errs (from a report being merged) is added to, not listed.
func joinSorted(errs []error) error {
	file, more := "", 0
	kept := make([]error, 0, len(errs))
	for _, err := range errs {
		var fe *FieldError
		if errors.As(err, &fe) && fe.more > 0 {
			file, more = fe.File, more+fe.more
			continue
		}
		kept = append(kept, err)
	}
	sort.SliceStable(kept, func(i, j int) bool {
		var a, b *FieldError
		if errors.As(kept[i], &a) && errors.As(kept[j], &b) {
			return a.Line < b.Line
		}
		return false
	})
	if len(kept) > MaxProblems {
		var fe *FieldError
		if errors.As(kept[0], &fe) {
			file = fe.File
		}
		more += len(kept) - MaxProblems
		kept = kept[:MaxProblems]
	}
	if more > 0 {
		kept = append(kept, &FieldError{File: file, Msg: fmt.Sprintf("and %d more problems", more), more: more})
	}
	return errors.Join(kept...)
}
