package importer

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/natsgate/natsgate/routes"
)

// segment is one path segment: literal text and {param}s in order.
type segment []part

type part struct {
	text  string // literal text, when param is ""
	param string // the parameter's name as natsgate writes it
}

// badParamChar is what natsgate's parameter names cannot hold: each
// names the NATS header Http-Param-<name>.
var badParamChar = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// parsePath reads an OpenAPI path template ("/pets/{id}.json") into its
// segments. Parameter names are made valid natsgate names ("{pet.id}"
// becomes {pet_id}). It refuses what no chi pattern can say: a literal
// "*" (chi's wildcard), braces that do not pair, an empty {} and "${"
// (the config file's variable syntax).
func parsePath(path string) ([]segment, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("the path does not start with /")
	}
	if strings.Contains(path, "*") {
		return nil, fmt.Errorf("the path holds a literal *, which chi reads as a wildcard")
	}
	if strings.Contains(path, "${") {
		return nil, fmt.Errorf("the path holds ${, which the config file reads as a variable")
	}
	var segs []segment
	for _, raw := range strings.Split(path[1:], "/") {
		var seg segment
		rest := raw
		for rest != "" {
			open := strings.IndexAny(rest, "{}")
			if open < 0 {
				seg = append(seg, part{text: rest})
				break
			}
			if rest[open] == '}' {
				return nil, fmt.Errorf("the path has a } without its {")
			}
			if open > 0 {
				seg = append(seg, part{text: rest[:open]})
			}
			end := strings.IndexAny(rest[open+1:], "{}")
			if end < 0 || rest[open+1+end] == '{' {
				return nil, fmt.Errorf("the path has a { without its }")
			}
			name := rest[open+1 : open+1+end]
			if name == "" {
				return nil, fmt.Errorf("the path has an empty {}")
			}
			seg = append(seg, part{param: badParamChar.ReplaceAllString(name, "_")})
			rest = rest[open+1+end+1:]
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// chiPattern writes the segments as a chi pattern under the base path.
func chiPattern(base string, segs []segment) string {
	var b strings.Builder
	b.WriteString(base)
	for _, seg := range segs {
		b.WriteByte('/')
		for _, p := range seg {
			if p.param != "" {
				b.WriteString("{" + p.param + "}")
			} else {
				b.WriteString(p.text)
			}
		}
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// routeKey is what chi tells routes apart by: the method and the pattern
// with parameter names left out, so /pets/{id} and /pets/{petId} are one.
func routeKey(method, pattern string) string {
	var b strings.Builder
	depth := 0
	for _, c := range pattern {
		switch {
		case c == '{':
			if depth == 0 {
				b.WriteString("{}")
			}
			depth++
		case c == '}':
			depth--
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return strings.ToUpper(method) + " " + b.String()
}

var badTokenChar = regexp.MustCompile(`[^a-z0-9_-]+`)

// subjectFor derives the subject template PREFIX.<segments>.<method>:
// static text lowercased, split at dots, with what a token cannot hold
// (and what would be hard to read in one) made "_"; each path parameter
// a token of its own. Only [a-z0-9_-] and {param} appear after the prefix,
// so every template it returns parses.
func subjectFor(prefix string, segs []segment, method string) string {
	toks := []string{prefix}
	for _, seg := range segs {
		for _, p := range seg {
			if p.param != "" {
				toks = append(toks, "{"+p.param+"}")
				continue
			}
			for _, t := range strings.Split(strings.ToLower(p.text), ".") {
				t = strings.Trim(badTokenChar.ReplaceAllString(t, "_"), "_-")
				if t != "" {
					toks = append(toks, t)
				}
			}
		}
	}
	return strings.Join(append(toks, strings.ToLower(method)), ".")
}

var (
	badNameChar  = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
	nameRuns     = regexp.MustCompile(`-{2,}`)
	maxRouteName = 100
)

// routeNameFor derives a route name from the operationId, or from the
// method and path when there is none ("get-pets-id"); the result passes
// natsgate's route-name rule (letters, digits, '-', '_' and '.', starting
// with a letter or digit) or is "" when nothing usable is left.
func routeNameFor(operationID, method string, segs []segment) string {
	name := cleanName(operationID)
	if name == "" {
		words := []string{strings.ToLower(method)}
		for _, seg := range segs {
			for _, p := range seg {
				if p.param != "" {
					words = append(words, p.param)
				} else {
					words = append(words, p.text)
				}
			}
		}
		name = cleanName(strings.Join(words, "-"))
	}
	return name
}

func cleanName(s string) string {
	s = badNameChar.ReplaceAllString(s, "-")
	s = nameRuns.ReplaceAllString(s, "-")
	s = strings.TrimLeft(s, "-_.")
	if len(s) > maxRouteName {
		s = s[:maxRouteName]
	}
	return strings.TrimRight(s, "-_.")
}

// uniqueName returns name, or name-2, name-3, ... whichever is not taken,
// and takes it.
func uniqueName(name string, taken map[string]bool) string {
	n := name
	for i := 2; taken[n]; i++ {
		n = fmt.Sprintf("%s-%d", name, i)
	}
	taken[n] = true
	return n
}

// checkPrefix reports whether a subject prefix is NATS tokens joined by
// dots with nothing a template would read as a parameter.
func checkPrefix(prefix string) error {
	for _, tok := range strings.Split(prefix, ".") {
		if err := routes.CheckToken(tok); err != nil {
			return fmt.Errorf("subject prefix %q: %w", prefix, err)
		}
		if strings.ContainsAny(tok, "{}") {
			return fmt.Errorf("subject prefix %q: braces would read as a parameter", prefix)
		}
	}
	return nil
}
