package devstack_test

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/devstack"
)

func TestCheckUpstream(t *testing.T) {
	tests := []struct {
		upstream string
		wantErr  string // "" = accepted
	}{
		{upstream: "http://127.0.0.1:3000"},
		{upstream: "https://api.example.com"},
		{upstream: "http://api.example.com/"},
		{upstream: "http://api.example.com/v2", wantErr: "has a path"},
		{upstream: "http://api.example.com/?x=1", wantErr: "has a path or query"},
		{upstream: "http://api.example.com?", wantErr: "has a path or query"},
		{upstream: "http://api.example.com#top", wantErr: "has a path or query"},
		{upstream: "http://user:secret@api.example.com", wantErr: "carries credentials"},
		{upstream: "localhost:3000", wantErr: "must be an http:// or https:// URL"},
		{upstream: "ftp://api.example.com", wantErr: "must be an http:// or https:// URL"},
		{upstream: "http:///x", wantErr: "must be an http:// or https:// URL"},
	}
	for _, tt := range tests {
		t.Run(tt.upstream, func(t *testing.T) {
			err := devstack.CheckUpstream(tt.upstream)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckUpstream: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckUpstream = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the password is in the message: %v", err)
			}
		})
	}
}
