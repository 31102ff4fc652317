package extproc_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/tier"
)

// poweredBy is a minimal Stage: it implements one hook.
type poweredBy struct{}

func (poweredBy) Name() string { return "powered_by" }

func (poweredBy) ResponseHeaders(_ context.Context, x *extproc.Exchange) error {
	x.SetResponseHeader("x-served-for", x.Tier)
	return nil
}

func ExampleNew() {
	cfg := extproc.Config{Identity: extproc.IdentityConfig{Tiers: map[string]string{"acme": "pro"}}}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// nil tier store: the static cfg.Identity.Tiers map.
	var store tier.Store
	srv, err := extproc.New(cfg, store, prometheus.NewRegistry(), log, extproc.WithStages(poweredBy{}))
	if err != nil {
		fmt.Println(err)
		return
	}
	// A BUFFERED body arrives as one gRPC message.
	g := grpc.NewServer(grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes()))
	srv.Register(g)
	defer g.Stop()
	fmt.Println(srv.Stages())
	fmt.Println(cfg.MaxRecvMsgBytes())
	// Output:
	// [identity powered_by metrics]
	// 2097152
}
