package db

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultMaxConns         = 10
	DefaultReadMaxConns     = 10
	DefaultMaxReplicaLag    = 5 * time.Second
	DefaultLagCheckInterval = 2 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
)

// Config is the `database` section of the Sluice config. The zero value plus
// WithDefaults is valid except for URL, which Validate requires.
type Config struct {
	// URL is the primary's connection string (postgres://… or key=value);
	// cmd/sluice fills it from DATABASE_URL or --database-url. Required.
	URL string `yaml:"url"`
	// ReadURL is an optional read replica (DATABASE_READ_URL). Empty: every
	// read goes to the primary.
	ReadURL string `yaml:"read_url"`
	// MaxConns caps the primary pool. Default 10.
	MaxConns int32 `yaml:"max_conns"`
	// ReadMaxConns caps the replica pool. Default 10.
	ReadMaxConns int32 `yaml:"read_max_conns"`
	// MaxReplicaLag is the replay lag above which reads leave the replica for
	// the primary until it catches up. Default 5s.
	MaxReplicaLag time.Duration `yaml:"max_replica_lag"`
	// LagCheckInterval is how often the background check measures the
	// replica's reachability and lag (never per query). Default 2s.
	LagCheckInterval time.Duration `yaml:"lag_check_interval"`
	// ConnectTimeout bounds dialing either server and each lag check.
	// Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.ReadMaxConns == 0 {
		c.ReadMaxConns = DefaultReadMaxConns
	}
	if c.MaxReplicaLag == 0 {
		c.MaxReplicaLag = DefaultMaxReplicaLag
	}
	if c.LagCheckInterval == 0 {
		c.LagCheckInterval = DefaultLagCheckInterval
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	return c
}

// Validate reports the first invalid field. It is fast and changes nothing;
// call it on the result of WithDefaults.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("database: url is required (DATABASE_URL)")
	case c.MaxConns < 1:
		return fmt.Errorf("database: max_conns %d must be at least 1", c.MaxConns)
	case c.ReadMaxConns < 1:
		return fmt.Errorf("database: read_max_conns %d must be at least 1", c.ReadMaxConns)
	case c.MaxReplicaLag <= 0:
		return fmt.Errorf("database: max_replica_lag %s must be positive", c.MaxReplicaLag)
	case c.LagCheckInterval <= 0:
		return fmt.Errorf("database: lag_check_interval %s must be positive", c.LagCheckInterval)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("database: connect_timeout %s must be positive", c.ConnectTimeout)
	}
	return nil
}
