package cachefilter

import (
	"testing"
	"time"
)

// FuzzDecodeAnnouncements feeds presence messages (presence.go), which come from the pub/sub
// channel: decoding never panics, whatever decodes has valid keys, and it encodes back to what
// decodes to the same.
func FuzzDecodeAnnouncements(f *testing.F) {
	until := time.UnixMilli(1_800_000_000_000)
	f.Add(encodeAnnouncements("r1", []announcement{{kind: announcePresent, primary: "aaaaaaaaaaaaaaa1:00ff", until: until}}))
	f.Add(encodeAnnouncements("r2", []announcement{
		{kind: announcePass, primary: "aaaaaaaaaaaaaaa1:00ff", until: until, path: "/p?q=1", vary: []string{"x-sluice-user"}, variant: "aaaaaaaaaaaaaaa1:00ff:ab"},
		{kind: announcePass, primary: "bbbbbbbbbbbbbbb2:11", until: until, path: "/"},
	}))
	f.Add("\x01\x00")
	f.Add("\x01\x02r1p\x03a:b\x00")
	f.Fuzz(func(t *testing.T, msg string) {
		origin, as, err := decodeAnnouncements(msg)
		if err != nil {
			return
		}
		for _, a := range as {
			tenant, _, err := splitKey(a.primary)
			if err != nil {
				t.Fatalf("decoded key %q: %v", a.primary, err)
			}
			if a.variant != "" {
				if _, err := variantKey(tenant, a.variant); err != nil {
					t.Fatalf("decoded variant %q: %v", a.variant, err)
				}
			}
		}
		origin2, as2, err := decodeAnnouncements(encodeAnnouncements(origin, as))
		if err != nil || origin2 != origin || len(as2) != len(as) {
			t.Fatalf("re-encoded: %q %d announcements, %v; want %q %d", origin2, len(as2), err, origin, len(as))
		}
		for i := range as {
			if as[i].primary != as2[i].primary || !as[i].until.Equal(as2[i].until) || as[i].variant != as2[i].variant {
				t.Fatalf("announcement %d: %+v, re-decoded %+v", i, as[i], as2[i])
			}
		}
	})
}
