package routes

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// CheckParamValue reports whether an unescaped path parameter value may
// travel to a worker at all, whether or not the subject uses it: valid
// UTF-8 with no white space (ASCII or Unicode: no-break space, line
// separator, ideographic space, ...), no control character (C0, DEL, C1)
// and no format character (byte order mark, zero-width space, bidi
// controls, ...). Such characters are invisible or misleading in logs, in
// subjects and in the Http-Param-* header the worker reads, and docs/protocol.md
// promises 400 for white space. name is the parameter's, for the error,
// which wraps ErrBadParam.
func CheckParamValue(name, v string) error {
	for i, r := range v {
		var what string
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(v[i:]); size == 1 {
				return fmt.Errorf("%w: parameter %q: not valid UTF-8", ErrBadParam, name)
			}
			continue // U+FFFD written out is a symbol like any other
		case unicode.IsSpace(r):
			what = "white space"
		case unicode.IsControl(r):
			what = "a control character"
		case unicode.Is(unicode.Cf, r):
			what = "a format character"
		default:
			continue
		}
		return fmt.Errorf("%w: parameter %q: contains %s (%U)", ErrBadParam, name, what, r)
	}
	return nil
}
