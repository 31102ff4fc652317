package redisconn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redistest"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		wantCluster bool
		wantErr     string
	}{
		{name: "default", cfg: Config{}},
		{name: "tls url", cfg: Config{URL: "rediss://user:secret@example.com:6380/1"}},
		{name: "cluster scheme", cfg: Config{URL: "redis+cluster://127.0.0.1:7000?addr=127.0.0.1:7001"}, wantCluster: true},
		{name: "cluster flag", cfg: Config{URL: "redis://127.0.0.1:7000", Cluster: true}, wantCluster: true},
		{name: "bad scheme", cfg: Config{URL: "http://x"}, wantErr: "parse url"},
		{name: "password not leaked", cfg: Config{URL: "ftp://user:hunter2@x"}, wantErr: "xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg.WithDefaults()
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "hunter2") {
					t.Fatalf("error %v, want %q without the password", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cl, err := New(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if _, isCluster := cl.(*redis.ClusterClient); isCluster != tt.wantCluster {
				t.Errorf("cluster client = %v, want %v", isCluster, tt.wantCluster)
			}
		})
	}
}

func TestPing(t *testing.T) {
	c := Config{URL: "redis://" + redistest.Addr()}.WithDefaults()
	cl, err := New(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := Ping(context.Background(), cl, time.Second); err != nil {
		t.Fatalf("ping real redis: %v", err)
	}
	cluster := redistest.StartCluster(t)
	cc, err := New(Config{URL: "redis+cluster://" + cluster.Addrs()[0]}.WithDefaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if err := Ping(context.Background(), cc, 2*time.Second); err != nil {
		t.Fatalf("ping cluster: %v", err)
	}
	down := redistest.StartServer(t)
	down.Kill()
	dc, _ := New(Config{URL: "redis://" + down.Addr()}.WithDefaults(), nil)
	defer dc.Close()
	if err := Ping(context.Background(), dc, 200*time.Millisecond); err == nil {
		t.Fatal("ping of a killed server succeeded")
	}
}
