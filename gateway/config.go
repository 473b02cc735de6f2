package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/natsgate/natsgate/routes"
)

// LoadConfig reads and compiles a configuration file, resolving ${VAR}
// from the environment, and reads the files its tls sections name (an
// unreadable file, or a key that does not match its certificate, is a
// config error). The NATS section is completed from outside the file: the
// natscli context it names (nats.context, else $NATS_CONTEXT), then
// $NATS_URL when it has no url (see routes.NATSConfig). Errors name file,
// line, route and field.
func LoadConfig(path string) (*routes.Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	t, err := routes.LoadEnv(path, data, routes.Env{Lookup: os.LookupEnv, ReadContext: contextReader(os.LookupEnv)})
	if err != nil {
		return nil, err
	}
	if err := routes.JoinProblems(checkTLSFiles(t)...); err != nil {
		return nil, err
	}
	return t, nil
}

// NewLogger builds the logger the log section asks for. format, when not
// empty, overrides log.format (the --log-format flag).
func NewLogger(cfg routes.LogConfig, w io.Writer, format string) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	if format == "" {
		format = cfg.Format
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ReloadFile reloads the route table from a file (on SIGHUP or a change
// seen by WatchFile), one reload at a time. A file that
// does not load leaves the old routes serving; the error is logged with
// file and line and counted in natsgate_config_reloads_total.
//
// It reads the listeners' certificates again first, whatever the file
// holds: a SIGHUP is also how an operator says "the certificates changed".
func (s *Server) ReloadFile(path string) bool {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.ReloadCertificates()
	t, err := LoadConfig(path)
	if err == nil {
		err = s.Reload(t)
		if err == nil {
			return true
		}
		s.log.Error("config reload failed; the old routes keep serving", "file", path, "error", err)
		return false
	}
	// Logged before it is counted, so whoever sees the count sees the line.
	s.log.Error("config reload failed; the old routes keep serving", "file", path, "error", err)
	s.ReloadFailed()
	return false
}

// WatchFile reloads the route table whenever the file's content changes,
// checking every interval until ctx ends (`natsgate serve --watch`). It
// compares content, not only the modification time, so touching the file
// or rewriting it unchanged reloads nothing. Reloads go through ReloadFile:
// a broken file is logged and counted, and the old routes keep serving.
func (s *Server) WatchFile(ctx context.Context, path string, interval time.Duration) {
	// The file is compared with the bytes the served table was loaded
	// from, not with a copy read here: an edit made between the load and
	// this call is a change too.
	var lastStat os.FileInfo
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := os.Stat(path)
		if err != nil || (lastStat != nil && st.ModTime().Equal(lastStat.ModTime()) && st.Size() == lastStat.Size()) {
			continue
		}
		lastStat = st
		data, err := os.ReadFile(path)
		if err != nil || routes.Digest(data) == s.Table().Digest {
			continue
		}
		s.log.Info("config file changed; reloading", "file", path)
		s.ReloadFile(path)
	}
}
