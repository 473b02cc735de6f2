package routes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strings"
)

// Env is what a configuration may read besides its own file. The package
// does no I/O itself: the caller hands it these (gateway.LoadConfig hands
// it the process's environment and natscli's context directory).
type Env struct {
	// Lookup reads an environment variable: ${VAR} in the file, NATS_URL
	// and NATS_CONTEXT, and HOME and $VAR in a context's file paths. nil:
	// nothing is set.
	Lookup func(name string) (string, bool)
	// ReadContext reads the natscli context called name, returning the
	// file it read (named in errors) and its content. nil: a config that
	// names a context is an error.
	ReadContext func(name string) (file string, data []byte, err error)
}

func (e Env) lookup(name string) (string, bool) {
	if e.Lookup == nil {
		return "", false
	}
	return e.Lookup(name)
}

// LoadEnv parses and compiles in one step, as Load does, reading the
// environment and natscli contexts through env.
func LoadEnv(file string, data []byte, env Env) (*Table, error) {
	cfg, err := parse(file, data, env)
	if cfg == nil {
		return nil, err
	}
	t, cerr := Compile(cfg)
	if err != nil || cerr != nil {
		return nil, joinSorted(append(flatten(err), flatten(cerr)...))
	}
	t.Digest = Digest(data)
	return t, nil
}

// DefaultContextURL is where a natscli context without a url connects,
// as natscli's own default.
const DefaultContextURL = "nats://127.0.0.1:4222"

// natsContext is the part of a natscli context file natsgate reads. The
// field names are natscli's (nats context save writes them).
type natsContext struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`

	// Fields natsgate cannot honour: set, they would change how natsgate
	// connects or where its JetStream calls go, so a context that sets one
	// is refused rather than half used.
	NSC          string `json:"nsc"`
	UserJWT      string `json:"user_jwt"`
	UserSeed     string `json:"user_seed"`
	SocksProxy   string `json:"socks_proxy"`
	JSDomain     string `json:"jetstream_domain"`
	JSAPIPrefix  string `json:"jetstream_api_prefix"`
	TLSFirst     bool   `json:"tls_first"`
	WinCertStore string `json:"windows_cert_store"`
}

// resolveNATS fills the NATS section from outside the file, in order of
// precedence: the file's own fields, then the natscli context it names
// (nats.context, else $NATS_CONTEXT), then $NATS_URL for the URL. With
// none of them the URL stays empty and the gateway starts an embedded
// server. It records where the URL came from in URLFrom.
func resolveNATS(cfg *Config, env Env) []error {
	n := &cfg.NATS
	if n.URL != "" {
		n.URLFrom = "config"
	}
	var errs []error
	name, from := n.Context, ""
	if name == "" {
		if v, ok := env.lookup("NATS_CONTEXT"); ok && v != "" {
			name, from = v, " (from NATS_CONTEXT)"
		}
	}
	if name != "" {
		errs = applyContext(cfg, name, from, env)
	}
	if n.URL == "" {
		if v, ok := env.lookup("NATS_URL"); ok && v != "" {
			v = withScheme(v)
			if err := checkNATSURLs(v); err != nil {
				errs = append(errs, cfg.src.fieldError(cfg, "nats.url", 0, fmt.Sprintf("NATS_URL: %v", err)))
			} else {
				n.URL, n.URLFrom = v, "NATS_URL"
			}
		}
	}
	if n.URL == "" && name != "" && len(errs) == 0 {
		n.URL = DefaultContextURL
	}
	return errs
}

// applyContext reads the natscli context name and fills what the NATS
// section leaves unset. Every problem names nats.context (its line) and
// the context file, with the file's line and field where there is one.
func applyContext(cfg *Config, name, from string, env Env) []error {
	n := &cfg.NATS
	fail := func(msg string) error {
		return cfg.src.fieldError(cfg, "nats.context", 0, fmt.Sprintf("context %q%s: %s", clip(name), from, msg))
	}
	if name == "" || strings.Contains(name, "..") || strings.ContainsAny(name, `/\`) {
		return []error{fail("not a context name (no \"..\", \"/\" or \"\\\")")}
	}
	if env.ReadContext == nil {
		return []error{fail("natscli contexts cannot be read here")}
	}
	file, data, err := env.ReadContext(name)
	if errors.Is(err, fs.ErrNotExist) {
		return []error{fail(fmt.Sprintf("no such context (%s does not exist)", file))}
	}
	if err != nil {
		return []error{fail(err.Error())}
	}
	var c natsContext
	if err := json.Unmarshal(data, &c); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return []error{fail(fmt.Sprintf("%s:%d: not a context file: %v", file, lineAt(data, se.Offset), err))}
		case errors.As(err, &te):
			return []error{fail(fmt.Sprintf("%s:%d: %s: must be a %s, not a %s", file, lineAt(data, te.Offset), te.Field, te.Type, te.Value))}
		}
		return []error{fail(fmt.Sprintf("%s: not a context file: %v", file, err))}
	}
	lines := jsonKeyLines(data)
	var errs []error
	field := func(key, msg string) {
		errs = append(errs, fail(fmt.Sprintf("%s:%d: %s: %s", file, lines[key], key, msg)))
	}
	for _, u := range []struct {
		key, value, why string
	}{
		{"nsc", c.NSC, "nsc lookups are not run: write the .creds file's path in creds"},
		{"user_jwt", c.UserJWT, "inline credentials are not read: write a .creds file's path in creds"},
		{"user_seed", c.UserSeed, "inline credentials are not read: write a .creds file's path in creds"},
		{"socks_proxy", c.SocksProxy, "natsgate does not connect through a SOCKS proxy"},
		{"jetstream_domain", c.JSDomain, "natsgate's JetStream calls use the account's own domain"},
		{"jetstream_api_prefix", c.JSAPIPrefix, "natsgate's JetStream calls use the default API prefix"},
		{"windows_cert_store", c.WinCertStore, "the Windows certificate store is not read: use cert, key and ca"},
	} {
		if u.value != "" {
			field(u.key, u.why)
		}
	}
	if c.TLSFirst {
		field("tls_first", "a TLS-first handshake is not supported")
	}
	if c.URL != "" {
		c.URL = withScheme(c.URL)
		if err := checkNATSURLs(c.URL); err != nil {
			field("url", err.Error())
			c.URL = ""
		}
	}
	if c.InboxPrefix != "" {
		if err := checkInboxPrefix(c.InboxPrefix); err != nil {
			field("inbox_prefix", err.Error())
			c.InboxPrefix = ""
		}
	}
	paths := []struct {
		key string
		p   *string
	}{{"creds", &c.Creds}, {"nkey", &c.NKey}, {"cert", &c.Cert}, {"key", &c.Key}, {"ca", &c.CA}}
	for _, f := range paths {
		if *f.p == "" {
			continue
		}
		p, err := expandPath(*f.p, env)
		if err != nil {
			field(f.key, err.Error())
		}
		*f.p = p
	}
	if len(errs) > 0 {
		return errs
	}

	if n.URL == "" && c.URL != "" {
		n.URL, n.URLFrom = c.URL, "context "+name
	}
	if n.URL == "" {
		// The context names the system, if only by natscli's default:
		// NATS_URL may still name it, but an embedded server never starts.
		n.URLFrom = "context " + name
	}
	if n.User == "" && n.Password == "" && n.Token == "" && n.NKeySeedFile == "" && n.CredsFile == "" {
		n.User, n.Password, n.Token = c.User, c.Password, c.Token
		n.CredsFile, n.NKeySeedFile = c.Creds, c.NKey
	}
	if n.TLS.Cert == "" && n.TLS.Key == "" {
		n.TLS.Cert, n.TLS.Key = c.Cert, c.Key
	}
	if n.TLS.CA == "" {
		n.TLS.CA = c.CA
	}
	if n.InboxPrefix == "" {
		n.InboxPrefix = c.InboxPrefix
	}
	return nil
}

// withScheme gives each URL of a comma-separated list written without a
// scheme ("demo.nats.io:4222", as natscli accepts) the nats:// one.
func withScheme(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p != "" && !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// checkNATSURLs checks a comma-separated list of NATS URLs.
func checkNATSURLs(list string) error {
	for _, u := range strings.Split(list, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err != nil || pu.Host == "" {
			return fmt.Errorf("%q is not a NATS URL (write it like nats://127.0.0.1:4222)", clip(hideUserinfo(u)))
		}
	}
	return nil
}

// hideUserinfo replaces a user, password or token written before the host
// of a URL with "***", so that an error quoting the URL (logged, printed)
// does not show the secret. It works on the text, as the URL it is given
// may not parse.
func hideUserinfo(u string) string {
	rest := u
	if scheme := strings.Index(u, "://"); scheme >= 0 {
		rest = u[scheme+3:]
	}
	host := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		host = rest[:i]
	}
	at := strings.LastIndex(host, "@")
	if at < 0 {
		return u
	}
	return u[:len(u)-len(rest)] + "***" + rest[at:]
}

// checkInboxPrefix checks an inbox prefix: subject tokens without
// wildcards, as nats.go appends ".<nuid>" to it.
func checkInboxPrefix(p string) error {
	for _, tok := range strings.Split(p, ".") {
		if err := CheckToken(tok); err != nil {
			reason := strings.TrimPrefix(err.Error(), ErrBadParam.Error()+": ")
			if reason == "empty" {
				reason = "an empty token"
			}
			return fmt.Errorf("%q must be subject tokens joined by dots, without wildcards (%s)", clip(p), reason)
		}
	}
	return nil
}

// expandPath expands $VAR and a leading "~" in a context's file path, as
// natscli does; the variables and HOME come from env.
func expandPath(p string, env Env) (string, error) {
	if scheme, rest, ok := strings.Cut(p, "://"); ok {
		if scheme != "file" {
			return p, fmt.Errorf("%s:// credentials are not read: write a file's path", scheme)
		}
		p = rest
	} else if strings.HasPrefix(p, "data:") {
		return p, errors.New("inline data: credentials are not read: write a file's path")
	}
	p = os.Expand(p, func(name string) string { v, _ := env.lookup(name); return v })
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, ok := env.lookup("HOME")
		if !ok || home == "" {
			return p, errors.New(`"~" needs HOME set`)
		}
		p = home + p[1:]
	}
	return p, nil
}

// jsonKeyLines maps each top-level key of a JSON object to its line.
func jsonKeyLines(data []byte) map[string]int {
	lines := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return lines
	}
	for dec.More() {
		t, err := dec.Token()
		key, ok := t.(string)
		if err != nil || !ok {
			return lines
		}
		lines[key] = lineAt(data, dec.InputOffset())
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return lines
		}
	}
	return lines
}

// lineAt is the 1-based line of a byte offset in data.
func lineAt(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + bytes.Count(data[:offset], []byte("\n"))
}
