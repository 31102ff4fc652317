package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluicehq/sluice/internal/tlsfiles/tlsfilestest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writeFile replaces a file the way rotation tools do: a new file renamed
// over the old one.
func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// serve accepts TLS connections with cfg until the test ends, completing
// each handshake.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// dial handshakes as a gRPC client would and returns the server's
// certificate's common name.
func dial(addr string, roots *x509.CertPool, client *tls.Certificate) (string, error) {
	cfg := &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}, ServerName: "127.0.0.1"}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// TLS 1.3 reports a refused client certificate on the first read.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil && !isEOF(err) {
		return "", err
	}
	st := c.ConnectionState()
	if st.NegotiatedProtocol != "h2" {
		return "", errors.New("ALPN did not settle on h2")
	}
	return st.PeerCertificates[0].Subject.CommonName, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

func TestRotationAndClientCertificates(t *testing.T) {
	dir := t.TempDir()
	files := Files{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), ClientCA: filepath.Join(dir, "ca.crt")}
	authority := tlsfilestest.NewCA(t, "test ca")
	cert, key := authority.Issue(t, "sluice-1", 2, false)
	writeFile(t, files.Cert, cert)
	writeFile(t, files.Key, key)
	writeFile(t, files.ClientCA, authority.PEM)
	s, err := New(files, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s.Config())
	roots := x509.NewCertPool()
	roots.AddCert(authority.Cert)
	cc, ck := authority.Issue(t, "envoy", 3, true)
	envoy, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	stranger := tlsfilestest.NewCA(t, "other ca")
	sc, sk := stranger.Issue(t, "intruder", 4, true)
	intruder, _ := tls.X509KeyPair(sc, sk)

	if cn, err := dial(addr, roots, &envoy); err != nil || cn != "sluice-1" {
		t.Fatalf("client with a certificate of the CA: %q, %v", cn, err)
	}
	if _, err := dial(addr, roots, nil); err == nil {
		t.Fatal("a client without a certificate was let in")
	}
	if _, err := dial(addr, roots, &intruder); err == nil {
		t.Fatal("a client with another CA's certificate was let in")
	}

	// Rotation: new files, next handshake.
	cert2, key2 := authority.Issue(t, "sluice-2", 5, false)
	writeFile(t, files.Cert, cert2)
	writeFile(t, files.Key, key2)
	if cn, err := dial(addr, roots, &envoy); err != nil || cn != "sluice-2" {
		t.Fatalf("after rotation: %q, %v; want the new certificate", cn, err)
	}
	// A new client CA: the old client certificate no longer passes.
	writeFile(t, files.ClientCA, stranger.PEM)
	if _, err := dial(addr, roots, &envoy); err == nil {
		t.Fatal("the old client CA still trusted after its file was replaced")
	}
	if cn, err := dial(addr, roots, &intruder); err != nil || cn != "sluice-2" {
		t.Fatalf("client of the new CA: %q, %v", cn, err)
	}
	// A half-written certificate keeps the last good one.
	writeFile(t, files.Cert, cert2[:len(cert2)/2])
	if cn, err := dial(addr, roots, &intruder); err != nil || cn != "sluice-2" {
		t.Fatalf("after a broken write: %q, %v; want the previous certificate", cn, err)
	}
}

func TestNewRefusesBrokenFiles(t *testing.T) {
	dir := t.TempDir()
	authority := tlsfilestest.NewCA(t, "ca")
	cert, key := authority.Issue(t, "s", 2, false)
	writeFile(t, filepath.Join(dir, "c"), cert)
	writeFile(t, filepath.Join(dir, "k"), key)
	writeFile(t, filepath.Join(dir, "junk"), []byte("not pem"))
	for name, f := range map[string]Files{
		"missing key":  {Cert: filepath.Join(dir, "c")},
		"missing file": {Cert: filepath.Join(dir, "c"), Key: filepath.Join(dir, "nope")},
		"key mismatch": {Cert: filepath.Join(dir, "c"), Key: filepath.Join(dir, "junk")},
		"CA not PEM":   {Cert: filepath.Join(dir, "c"), Key: filepath.Join(dir, "k"), ClientCA: filepath.Join(dir, "junk")},
	} {
		if _, err := New(f, nil); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}
