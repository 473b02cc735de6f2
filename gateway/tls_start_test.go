package gateway

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/natsgate/natsgate/internal/natstest"
)

// A certificate that has expired when natsgate starts was served without
// a word: a rotated one is refused with an error logged, but at start
// there is no older pair to keep. It is still served (refusing to start
// would turn a certificate problem into an outage of everything else, the
// admin listener included), and the log says so at error level.
func TestExpiredCertificateAtStartIsLogged(t *testing.T) {
	ca := newTestCA(t, "natsgate test CA")
	dir := t.TempDir()
	certFile, keyFile := tlsFiles(t, dir, "server", issue(t, ca, "natsgate", false, -time.Minute))
	ns := natstest.RunServer(t)
	log := &syncBuffer{}
	startGatewayLogging(t, ns, `
http:
  tls: {cert_file: `+strconv.Quote(certFile)+`, key_file: `+strconv.Quote(keyFile)+`}
log: {format: json}
routes:
  - {name: r, method: GET, path: /r, nats: {subject: r}}
`, log)
	var found string
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, "TLS certificate outside its validity") {
			found = line
		}
	}
	if found == "" || !strings.Contains(found, `"level":"ERROR"`) || !strings.Contains(found, "expired") || !strings.Contains(found, filepath.Base(certFile)) {
		t.Errorf("no error line for the expired certificate served at start; got:\n%s", log.String())
	}
}
