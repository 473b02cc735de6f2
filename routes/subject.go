package routes

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Errors of rendering a subject from a request's path parameters. The
// gateway maps ErrBadParam to 400 and ErrSubjectTooLong to 414.
var (
	ErrBadParam       = errors.New("path parameter is not a single subject token")
	ErrSubjectTooLong = errors.New("rendered subject is too long")
)

// Subject is a compiled subject template such as "users.{id}.get". Each
// token is literal text and {param} references; a parameter's value always
// lands inside one token, so a request can never add a token or a wildcard.
type Subject struct {
	template string
	parts    []subjectPart
	params   []string // distinct parameter names, in order of first use
	literal  int      // bytes of literal text, to size the buffer
}

type subjectPart struct {
	text  string // literal text, when param is ""
	param string
}

// String returns the template as written.
func (s *Subject) String() string { return s.template }

// Params returns the parameter names the template uses.
func (s *Subject) Params() []string { return s.params }

// IsLiteral reports whether the template has no parameters.
func (s *Subject) IsLiteral() bool { return len(s.params) == 0 }

// ParseSubject compiles a subject template. Tokens are separated by dots;
// each token is non-empty, has no white space or control characters, and no
// wildcard ("*" or ">"). "{name}" inserts a path parameter.
func ParseSubject(tmpl string) (*Subject, error) {
	if tmpl == "" {
		return nil, errors.New("subject is empty")
	}
	s := &Subject{template: tmpl}
	seen := map[string]bool{}
	for i, tok := range strings.Split(tmpl, ".") {
		if tok == "" {
			return nil, fmt.Errorf("subject %q has an empty token (at token %d)", tmpl, i+1)
		}
		if tok == "*" || tok == ">" {
			return nil, fmt.Errorf("subject %q has the wildcard %q: a route publishes to one subject; use {param} to take a token from the path", tmpl, tok)
		}
		if i > 0 {
			s.parts = append(s.parts, subjectPart{text: "."})
		}
		rest := tok
		for rest != "" {
			open := strings.IndexByte(rest, '{')
			if open < 0 {
				if err := checkLiteral(tmpl, rest); err != nil {
					return nil, err
				}
				s.parts = append(s.parts, subjectPart{text: rest})
				break
			}
			if open > 0 {
				if err := checkLiteral(tmpl, rest[:open]); err != nil {
					return nil, err
				}
				s.parts = append(s.parts, subjectPart{text: rest[:open]})
			}
			end := strings.IndexByte(rest[open:], '}')
			if end < 0 {
				return nil, fmt.Errorf("subject %q has an unclosed {", tmpl)
			}
			name := rest[open+1 : open+end]
			if name == "" || strings.ContainsAny(name, "{:") {
				return nil, fmt.Errorf("subject %q has a bad parameter {%s}", tmpl, name)
			}
			s.parts = append(s.parts, subjectPart{param: name})
			if !seen[name] {
				seen[name] = true
				s.params = append(s.params, name)
			}
			rest = rest[open+end+1:]
		}
	}
	// Merge adjacent literal parts so rendering copies as few pieces as it can.
	merged := s.parts[:0]
	for _, p := range s.parts {
		if n := len(merged); n > 0 && p.param == "" && merged[n-1].param == "" {
			merged[n-1].text += p.text
			continue
		}
		merged = append(merged, p)
	}
	s.parts = merged
	for _, p := range s.parts {
		s.literal += len(p.text)
	}
	return s, nil
}

func checkLiteral(tmpl, text string) error {
	if strings.ContainsAny(text, "*>}") {
		return fmt.Errorf("subject %q has a wildcard or stray brace in %q", tmpl, text)
	}
	for _, r := range text {
		if r <= ' ' || r == 0x7f || r == utf8.RuneError {
			return fmt.Errorf("subject %q has white space or a control character", tmpl)
		}
	}
	return nil
}

// Render fills the template from a request's path parameters: names and
// values are the route's parameters and their unescaped values, in the same
// order. Each value used must be a valid part of one token (see CheckToken);
// the result must be at most max bytes (0: no limit).
func (s *Subject) Render(names, values []string, max int) (string, error) {
	if len(s.params) == 0 {
		return s.template, nil
	}
	n := s.literal
	for _, p := range s.parts {
		if p.param != "" {
			v := lookup(names, values, p.param)
			if err := CheckToken(v); err != nil {
				return "", fmt.Errorf("parameter %q: %w", p.param, err)
			}
			n += len(v)
		}
	}
	if max > 0 && n > max {
		return "", ErrSubjectTooLong
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range s.parts {
		if p.param == "" {
			b.WriteString(p.text)
		} else {
			b.WriteString(lookup(names, values, p.param))
		}
	}
	return b.String(), nil
}

func lookup(names, values []string, name string) string {
	for i, n := range names {
		if n == name && i < len(values) {
			return values[i]
		}
	}
	return ""
}

// CheckToken reports whether an unescaped path parameter can stand inside
// one subject token: not empty, no ".", "*", ">", white space, control
// characters or invalid UTF-8. The error wraps ErrBadParam.
func CheckToken(v string) error {
	if v == "" {
		return fmt.Errorf("%w: empty", ErrBadParam)
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.' || c == '*' || c == '>':
			return fmt.Errorf("%w: contains %q", ErrBadParam, c)
		case c <= ' ' || c == 0x7f:
			return fmt.Errorf("%w: contains white space or a control character", ErrBadParam)
		}
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: not valid UTF-8", ErrBadParam)
	}
	return nil
}

// CoveredBy reports whether a subscription on pattern (a NATS subject that
// may hold the wildcards "*" and ">", like a micro endpoint's subject)
// receives every subject the template can render, whatever the path
// parameters. A token that holds a parameter varies with the request, so
// only "*" or ">" covers it; a literal token is covered by the same
// literal or by a wildcard. ">" covers one or more tokens, as in NATS.
// Discovery uses it to find which workers answer a route.
func (s *Subject) CoveredBy(pattern string) bool {
	if pattern == "" {
		return false
	}
	tmpl := strings.Split(s.template, ".")
	pat := strings.Split(pattern, ".")
	for i, p := range pat {
		if p == "" {
			return false // not a valid subject
		}
		if p == ">" {
			return i == len(pat)-1 && len(tmpl) > i
		}
		if i >= len(tmpl) {
			return false
		}
		if p == "*" {
			continue
		}
		if strings.ContainsRune(tmpl[i], '{') || tmpl[i] != p {
			return false
		}
	}
	return len(pat) == len(tmpl)
}
