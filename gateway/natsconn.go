package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/natsgate/natsgate/routes"
)

// EmbeddedServer is an in-process nats-server with JetStream, started when
// the config has no nats.url.
type EmbeddedServer struct {
	*server.Server
	removeDir string // the store dir natsgate made, removed at Shutdown
}

// embeddedStartTimeout bounds how long StartEmbedded waits for the server
// to accept connections.
const embeddedStartTimeout = 10 * time.Second

// StartEmbedded starts an in-process nats-server with JetStream, listening
// on cfg.Listen so that outside workers can join it. A listen address that
// cannot be bound (the port is taken) is an error at once, naming the
// address: nats-server reports it only through its log, so StartEmbedded
// gives the server a logger that passes its fatal errors back.
func StartEmbedded(cfg routes.EmbeddedConfig) (*EmbeddedServer, error) {
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS listen %q: bad port", cfg.Listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	es := &EmbeddedServer{}
	dir := cfg.StoreDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "natsgate-js-"); err != nil {
			return nil, err
		}
		es.removeDir = dir
	}
	fail := func(err error) (*EmbeddedServer, error) {
		if es.removeDir != "" {
			_ = os.RemoveAll(es.removeDir)
		}
		return nil, err
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "natsgate-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return fail(fmt.Errorf("embedded NATS: %w", err))
	}
	fatal := fatalLog{errs: make(chan string, 1)}
	ns.SetLogger(fatal, false, false)
	ns.Start()
	deadline := time.Now().Add(embeddedStartTimeout)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-fatal.errs:
			ns.Shutdown()
			ns.WaitForShutdown()
			return fail(fmt.Errorf("embedded NATS cannot start on nats.embedded.listen %s: %s", cfg.Listen, msg))
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			ns.WaitForShutdown()
			return fail(fmt.Errorf("embedded NATS on nats.embedded.listen %s did not become ready within %v", cfg.Listen, embeddedStartTimeout))
		}
	}
	es.Server = ns
	return es, nil
}

// fatalLog is the embedded server's logger: it keeps the first fatal
// error (a listener that cannot bind) for StartEmbedded and drops the
// rest, as NoLog would.
type fatalLog struct{ errs chan string }

func (l fatalLog) Fatalf(format string, v ...any) {
	select {
	case l.errs <- fmt.Sprintf(format, v...):
	default:
	}
}
func (fatalLog) Noticef(string, ...any) {}
func (fatalLog) Warnf(string, ...any)   {}
func (fatalLog) Errorf(string, ...any)  {}
func (fatalLog) Debugf(string, ...any)  {}
func (fatalLog) Tracef(string, ...any)  {}

// Shutdown stops the server and removes a store dir natsgate made.
func (es *EmbeddedServer) Shutdown() {
	es.Server.Shutdown()
	es.Server.WaitForShutdown()
	if es.removeDir != "" {
		_ = os.RemoveAll(es.removeDir)
	}
}

// contextReader reads natscli contexts where natscli keeps them:
// $XDG_CONFIG_HOME/nats/context/NAME.json, or under $HOME/.config when
// XDG_CONFIG_HOME is unset. lookupEnv reads the environment.
func contextReader(lookupEnv func(string) (string, bool)) func(name string) (string, []byte, error) {
	return func(name string) (string, []byte, error) {
		root, _ := lookupEnv("XDG_CONFIG_HOME")
		if root == "" {
			home, _ := lookupEnv("HOME")
			if home == "" {
				return "", nil, errors.New("neither XDG_CONFIG_HOME nor HOME is set, so natscli's context directory is unknown")
			}
			root = filepath.Join(home, ".config")
		}
		file := filepath.Join(root, "nats", "context", name+".json")
		data, err := readContextFile(file)
		return file, data, err
	}
}

// maxContextFile bounds what is read of a context file: natscli writes a
// few hundred bytes, so anything near this is not a context.
const maxContextFile = 1 << 20

// readContextFile reads a context file that is a regular file of at most
// maxContextFile bytes. A FIFO would block the load forever and a
// symlink to /dev/zero would read without end, so neither is opened.
func readContextFile(file string) ([]byte, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", file, fi.Mode().Type())
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxContextFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxContextFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a natscli context", file, maxContextFile)
	}
	return data, nil
}

// urlFrom says where the connection's URL came from, for the log.
func urlFrom(cfg routes.NATSConfig, embedded *EmbeddedServer) string {
	switch {
	case embedded != nil:
		return "embedded"
	case cfg.URLFrom != "":
		return cfg.URLFrom
	}
	return "config"
}

// connHooks are called on connection events.
type connHooks struct {
	disconnected func(error)
	reconnected  func()
	closed       func()
	asyncError   func(*nats.Subscription, error)
}

// connect dials NATS with the config's credentials and TLS. The reconnect
// buffer is off: while disconnected a publish fails at once instead of
// sitting in a buffer that a crash would lose, so natsgate never answers
// 2xx for a message NATS has not seen.
func connect(cfg routes.NATSConfig, embedded *EmbeddedServer, hooks connHooks) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(*cfg.MaxReconnects),
		nats.ReconnectWait(time.Duration(cfg.ReconnectWait)),
		nats.ReconnectJitter(50*time.Millisecond, 250*time.Millisecond),
		nats.ReconnectBufSize(-1),
		// A server that stops answering (paused, hung, or behind a network
		// that drops packets without a reset) is declared stale after three
		// unanswered pings, about 4s: readiness turns 503, requests are
		// refused at once, and reconnecting starts.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(3),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { hooks.disconnected(err) }),
		nats.ReconnectHandler(func(*nats.Conn) { hooks.reconnected() }),
		nats.ClosedHandler(func(*nats.Conn) { hooks.closed() }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) { hooks.asyncError(sub, err) }),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_seed_file %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	}
	if cfg.CredsFile != "" {
		if _, err := os.Stat(cfg.CredsFile); err != nil {
			return nil, fmt.Errorf("nats.creds_file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.InboxPrefix != "" {
		// nc.NewInbox and nc.NewRespInbox follow it: the reply mux,
		// JetStream and discovery all take their inboxes from them.
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CA))
	}
	if cfg.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.Cert, cfg.TLS.Key))
	}
	url := cfg.URL
	if embedded != nil {
		opts = append(opts, nats.InProcessServer(embedded.Server))
		url = embedded.ClientURL()
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at %s: %w", redactURL(url), err)
	}
	return nc, nil
}

// redactURL hides a password or token written in a NATS URL.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "***" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// ensureStreams creates or updates the streams the config declares.
func ensureStreams(ctx context.Context, js jetstream.JetStream, streams []routes.StreamConfig, log *slog.Logger) error {
	for _, s := range streams {
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:       s.Name,
			Subjects:   s.Subjects,
			Replicas:   s.Replicas,
			Duplicates: time.Duration(s.DuplicateWindow),
		})
		if err != nil {
			return fmt.Errorf("stream %s: %w", s.Name, err)
		}
		log.Info("stream ready", "stream", s.Name, "subjects", s.Subjects, "replicas", s.Replicas)
	}
	return nil
}
