package gateway

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/natsgate/natsgate/routes"
)

// LoadConfig reads and compiles a configuration file, resolving ${VAR}
// from the environment. Errors name file, line, route and field.
func LoadConfig(path string) (*routes.Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return routes.Load(path, data, os.LookupEnv)
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

// ReloadFile reloads the route table from a file (on SIGHUP). A file that
// does not load leaves the old routes serving; the error is logged with
// file and line and counted in natsgate_config_reloads_total.
func (s *Server) ReloadFile(path string) bool {
	t, err := LoadConfig(path)
	if err == nil {
		err = s.Reload(t)
		if err == nil {
			return true
		}
	} else {
		s.ReloadFailed()
	}
	s.log.Error("config reload failed; the old routes keep serving", "file", path, "error", err)
	return false
}
