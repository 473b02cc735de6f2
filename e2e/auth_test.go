package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/natsgate/natsgate/internal/testpki"
)

// publishRoute is all the auth scenarios need: a 202 means natsgate is
// connected and allowed to publish.
const publishRoute = `
routes:
  - name: post-event
    method: POST
    path: /events/{kind}
    nats: {subject: "events.{kind}", pattern: publish}
`

// authCase is a nats-server configured for one kind of credential, with a
// good and a bad natsgate config for it.
type authCase struct {
	name       string
	server     string        // nats-server config lines
	scheme     string        // nats or tls
	good, bad  string        // lines under natsgate's nats:
	spy        []nats.Option // how the test's own client connects
	badMessage string        // what the start-up error must say
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func authCases(t *testing.T) []authCase {
	dir := t.TempDir()
	var cases []authCase

	cases = append(cases, authCase{
		name:       "user and password",
		server:     "authorization { user: gw, password: \"s3cret\" }\n",
		good:       "  user: gw\n  password: s3cret",
		bad:        "  user: gw\n  password: wrong",
		spy:        []nats.Option{nats.UserInfo("gw", "s3cret")},
		badMessage: "authorization violation",
	})
	cases = append(cases, authCase{
		name:       "token",
		server:     "authorization { token: \"t0ken-t0ken\" }\n",
		good:       "  token: t0ken-t0ken",
		bad:        "  token: not-the-token",
		spy:        []nats.Option{nats.Token("t0ken-t0ken")},
		badMessage: "authorization violation",
	})

	// NKey: the server knows the public key; natsgate signs with the seed.
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	goodSeed := writeFile(t, dir, "user.nk", string(userSeed))
	badSeed := writeFile(t, dir, "other.nk", string(otherSeed))
	nkeyOpt, err := nats.NkeyOptionFromSeed(goodSeed)
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, authCase{
		name:       "nkey seed",
		server:     fmt.Sprintf("authorization { users: [ { nkey: %s } ] }\n", userPub),
		good:       "  nkey_seed_file: " + goodSeed,
		bad:        "  nkey_seed_file: " + badSeed,
		spy:        []nats.Option{nkeyOpt},
		badMessage: "authorization violation",
	})

	// .creds: operator mode, with the account preloaded into a memory
	// resolver; a user signed by an unknown account is refused.
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	creds := func(name string, acc nkeys.KeyPair) string {
		u, _ := nkeys.CreateUser()
		uPub, _ := u.PublicKey()
		uSeed, _ := u.Seed()
		uJWT, err := jwt.NewUserClaims(uPub).Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		text, err := jwt.FormatUserConfig(uJWT, uSeed)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, dir, name, string(text))
	}
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	accJWT, err := jwt.NewAccountClaims(accPub).Encode(op)
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := nkeys.CreateAccount()
	goodCreds, badCreds := creds("good.creds", acc), creds("bad.creds", stranger)
	cases = append(cases, authCase{
		name:       "creds file",
		server:     fmt.Sprintf("operator: %s\nresolver: MEMORY\nresolver_preload: { %s: %s }\n", opJWT, accPub, accJWT),
		good:       "  creds_file: " + goodCreds,
		bad:        "  creds_file: " + badCreds,
		spy:        []nats.Option{nats.UserCredentials(goodCreds)},
		badMessage: "authorization violation",
	})

	// TLS with a CA and a client certificate the server verifies.
	pki, err := testpki.WriteMutual(dir, "natsgate e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	cases = append(cases, authCase{
		name:       "TLS with client certificate",
		server:     fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true, timeout: 2 }\n", pki.ServerCert, pki.ServerKey, pki.CA),
		scheme:     "tls",
		good:       fmt.Sprintf("  tls:\n    ca: %s\n    cert: %s\n    key: %s", pki.CA, pki.ClientCert, pki.ClientKey),
		bad:        fmt.Sprintf("  tls:\n    ca: %s", pki.CA), // no client certificate
		spy:        []nats.Option{nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey)},
		badMessage: "tls",
	})
	return cases
}

// NATS auth and TLS from config, each against a real nats-server set up
// for it: the right credential serves, a wrong one fails start-up with one
// clear line and a non-zero exit.
func TestNATSAuthAndTLS(t *testing.T) {
	for _, c := range authCases(t) {
		t.Run(c.name, func(t *testing.T) {
			ns := startNATS(t, natsOptions{extra: c.server})
			url := ns.URL()
			if c.scheme == "tls" {
				url = strings.Replace(url, "nats://", "tls://", 1)
			}

			g := startGateway(t, gatewayConfig{NATSURL: url, NATS: c.good, Body: publishRoute})
			spyConn, err := nats.Connect(url, c.spy...)
			if err != nil {
				t.Fatalf("the test's own client: %v", err)
			}
			defer spyConn.Close()
			got := make(chan *nats.Msg, 1)
			if _, err := spyConn.ChanSubscribe("events.>", got); err != nil {
				t.Fatal(err)
			}
			_ = spyConn.Flush()
			if e := do(newClient(t), "POST", g.URL+"/events/signed", "{}", nil); e.status != 202 {
				t.Fatalf("publish with good credentials: %v", e)
			}
			select {
			case m := <-got:
				if m.Subject != "events.signed" {
					t.Errorf("got %s", m.Subject)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the published message never arrived")
			}

			bad := launchGateway(t, gatewayConfig{NATSURL: url, NATS: c.bad, Body: publishRoute})
			code, exited := bad.Wait(15 * time.Second)
			if !exited {
				t.Fatalf("natsgate with a wrong credential is still running after 15s:\n%s", bad.Output())
			}
			out := strings.TrimSpace(bad.Output())
			if code == 0 {
				t.Errorf("natsgate with a wrong credential exited 0")
			}
			if lines := strings.Count(out, "\n") + 1; lines != 1 {
				t.Errorf("want one line on a failed start, got %d:\n%s", lines, out)
			}
			if !strings.Contains(strings.ToLower(out), c.badMessage) {
				t.Errorf("the start-up error does not say %q:\n%s", c.badMessage, out)
			}
			assertNoStackTrace(t, out)
			if strings.Contains(out, "s3cret") || strings.Contains(out, "t0ken") || strings.Contains(out, "wrong") || strings.Contains(out, "not-the-token") {
				t.Errorf("the start-up error shows a secret:\n%s", out)
			}
		})
	}
}
