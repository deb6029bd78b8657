package relay

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	bad := Config{Retention: time.Second, Synchronous: "fast", WindowEvents: 1, WindowBytes: 1}
	err := bad.Validate()
	for _, key := range []string{"relay.retention", "relay.synchronous", "relay.window_events", "relay.window_bytes"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate(%+v) = %v, want it to name %s", bad, err, key)
		}
	}
}
