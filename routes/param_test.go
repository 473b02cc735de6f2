package routes_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/natsgate/natsgate/routes"
)

func TestCheckParamValue(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		why         string // in the error; "" for a value that passes
	}{
		{"digits", "42", ""},
		{"ASCII", "user-7_a:b~", ""},
		{"latin", "zoë", ""},
		{"CJK", "日本", ""},
		{"emoji", "😀", ""},
		{"combining mark", "e\u0301", ""},
		{"replacement character written out", "a\uFFFDb", ""},
		{"empty (CheckToken's to refuse)", "", ""},
		{"dots and wildcards (CheckToken's to refuse)", "a.*>", ""},
		{"space", "a b", "white space (U+0020)"},
		{"tab", "a\tb", "white space (U+0009)"},
		{"CR", "a\rb", "white space (U+000D)"},
		{"LF", "a\nb", "white space (U+000A)"},
		{"NUL", "a\x00b", "a control character (U+0000)"},
		{"ESC", "\x1b[0m", "a control character (U+001B)"},
		{"DEL", "a\x7fb", "a control character (U+007F)"},
		{"C1 CSI", "a\u009bb", "a control character (U+009B)"},
		{"next line", "a\u0085b", "white space (U+0085)"},
		{"no-break space", "a\u00a0b", "white space (U+00A0)"},
		{"ogham space", "a\u1680b", "white space (U+1680)"},
		{"em space", "a\u2003b", "white space (U+2003)"},
		{"line separator", "a\u2028b", "white space (U+2028)"},
		{"paragraph separator", "a\u2029b", "white space (U+2029)"},
		{"narrow no-break space", "a\u202fb", "white space (U+202F)"},
		{"ideographic space", "a\u3000b", "white space (U+3000)"},
		{"byte order mark", "\ufeffa", "a format character (U+FEFF)"},
		{"zero-width space", "a\u200bb", "a format character (U+200B)"},
		{"zero-width joiner", "a\u200db", "a format character (U+200D)"},
		{"right-to-left override", "a\u202eb", "a format character (U+202E)"},
		{"soft hyphen", "a\u00adb", "a format character (U+00AD)"},
		{"tag character", "a\U000E0041", "a format character (U+E0041)"},
		{"invalid UTF-8", "a\xffb", "not valid UTF-8"},
		{"truncated UTF-8", "a\xe2\x80", "not valid UTF-8"},
		{"encoded surrogate", "\xed\xa0\x80", "not valid UTF-8"},
		{"overlong encoding", "\xc0\xaf", "not valid UTF-8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := routes.CheckParamValue("id", tt.value)
			switch {
			case tt.why == "" && err != nil:
				t.Errorf("CheckParamValue(%q) = %v, want nil", tt.value, err)
			case tt.why != "" && !errors.Is(err, routes.ErrBadParam):
				t.Errorf("CheckParamValue(%q) = %v, want ErrBadParam", tt.value, err)
			case tt.why != "" && (!strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), `parameter "id"`)):
				t.Errorf("CheckParamValue(%q) = %q, want it to name parameter \"id\" and say %q", tt.value, err, tt.why)
			}
		})
	}
}

// FuzzCheckParamValue holds CheckParamValue to its contract: a value it
// lets through is valid UTF-8 with no white space, control or format
// character, and one it refuses holds one of them.
func FuzzCheckParamValue(f *testing.F) {
	for _, s := range []string{"42", "zoë", "a b", "a\u00a0b", "\u2028", "\ufeff", "a\u200bb", "\xff", "a\xe2\x80", "\x00", "\u009b", "a\uFFFDb", "\U000E0041"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		bad := !utf8.ValidString(v)
		for _, r := range v {
			if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				bad = true
			}
		}
		err := routes.CheckParamValue("p", v)
		if bad != (err != nil) {
			t.Fatalf("CheckParamValue(%q) = %v; holds a refused character: %v", v, err, bad)
		}
		if err != nil && !errors.Is(err, routes.ErrBadParam) {
			t.Fatalf("CheckParamValue(%q) = %v, want ErrBadParam", v, err)
		}
	})
}
