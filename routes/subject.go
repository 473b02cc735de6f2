package routes

import (
	"errors"
	"fmt"
	"net/url"
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

// Render fills the template from the request's path parameters. value
// returns a parameter's raw (still percent-encoded) text as routed. Each
// value is unescaped and must then be a valid part of one token; the result
// must be at most max bytes (0: no limit).
func (s *Subject) Render(value func(name string) string, max int) (string, error) {
	if len(s.params) == 0 {
		return s.template, nil
	}
	var b strings.Builder
	b.Grow(s.literal + 16*len(s.params))
	for _, p := range s.parts {
		if p.param == "" {
			b.WriteString(p.text)
			continue
		}
		raw := value(p.param)
		if max > 0 && len(raw) > 3*max {
			return "", ErrSubjectTooLong // too long even fully percent-encoded
		}
		v, err := TokenValue(raw)
		if err != nil {
			return "", fmt.Errorf("parameter %q: %w", p.param, err)
		}
		b.WriteString(v)
		if max > 0 && b.Len() > max {
			return "", ErrSubjectTooLong
		}
	}
	if max > 0 && b.Len() > max {
		return "", ErrSubjectTooLong
	}
	return b.String(), nil
}

// TokenValue unescapes a raw path parameter and checks that it can stand
// inside one subject token: not empty, no ".", "*", ">", white space,
// control characters or invalid UTF-8. The error wraps ErrBadParam.
func TokenValue(raw string) (string, error) {
	v := raw
	if strings.IndexByte(raw, '%') >= 0 {
		u, err := url.PathUnescape(raw)
		if err != nil {
			return "", fmt.Errorf("%w: bad percent-encoding", ErrBadParam)
		}
		v = u
	}
	if v == "" {
		return "", fmt.Errorf("%w: empty", ErrBadParam)
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.' || c == '*' || c == '>':
			return "", fmt.Errorf("%w: contains %q", ErrBadParam, c)
		case c <= ' ' || c == 0x7f:
			return "", fmt.Errorf("%w: contains white space or a control character", ErrBadParam)
		}
	}
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("%w: not valid UTF-8", ErrBadParam)
	}
	return v, nil
}
