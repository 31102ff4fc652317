// Package tlsfiles serves TLS from PEM files that may be replaced while the
// process runs (certificate rotation by cert-manager, a Kubernetes Secret
// update, a cron job): every handshake uses the files as they are then.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of a TLS server.
type Files struct {
	// Cert and Key are the server's certificate (chain) and private key.
	Cert, Key string
	// ClientCA, when set, holds the CAs a client certificate must chain to:
	// clients without a valid one are refused (mutual TLS).
	ClientCA string
}

// Server hands out the TLS configuration of the files' current content. Its
// methods are safe for concurrent use.
type Server struct {
	files Files
	log   *slog.Logger

	mu     sync.Mutex // guards stamps, config, failed
	stamps [3]stamp
	config *tls.Config
	failed bool // the last reload failed (logged once until one succeeds)
}

// stamp identifies a file's version without reading it.
type stamp struct {
	size int64
	mod  time.Time
}

// New loads the files (an error if they do not make a TLS server) and
// returns a Server. log may be nil.
func New(f Files, log *slog.Logger) (*Server, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("tlsfiles: a certificate and a key are needed")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{files: f, log: log}
	stamps, err := s.stat()
	if err != nil {
		return nil, err
	}
	cfg, err := s.load()
	if err != nil {
		return nil, err
	}
	s.stamps, s.config = stamps, cfg
	return s, nil
}

// Config returns the configuration to hand to a TLS listener (or to gRPC's
// credentials.NewTLS): it takes each handshake's settings from the files,
// reloaded when any changed since the last handshake. A reload that fails
// (a half-written file) keeps the previous certificates and is logged.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"h2"},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return s.current(), nil },
	}
}

func (s *Server) current() *tls.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	stamps, err := s.stat()
	if err == nil && stamps == s.stamps {
		return s.config
	}
	var cfg *tls.Config
	if err == nil {
		cfg, err = s.load()
	}
	if err != nil {
		if !s.failed {
			s.log.Error("TLS files changed but cannot be loaded; serving the previous certificates", "err", err)
			s.failed = true
		}
		return s.config
	}
	s.log.Info("TLS files reloaded", "cert", s.files.Cert)
	s.stamps, s.config, s.failed = stamps, cfg, false
	return s.config
}

func (s *Server) stat() ([3]stamp, error) {
	var out [3]stamp
	for i, name := range []string{s.files.Cert, s.files.Key, s.files.ClientCA} {
		if name == "" {
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			return out, fmt.Errorf("tlsfiles: %w", err)
		}
		out[i] = stamp{size: fi.Size(), mod: fi.ModTime()}
	}
	return out, nil
}

// load reads and parses the files into a complete server configuration.
func (s *Server) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("tlsfiles: certificate %s, key %s: %w", s.files.Cert, s.files.Key, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2"}, // gRPC: ALPN must offer HTTP/2
		Certificates: []tls.Certificate{cert},
	}
	if s.files.ClientCA != "" {
		pem, err := os.ReadFile(s.files.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tlsfiles: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tlsfiles: client CA %s: no PEM certificate", s.files.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
