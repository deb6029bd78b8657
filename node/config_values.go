package node

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string in TOML ("30s", "72h").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration like 30s or 72h", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as Go prints it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// String returns the duration as Go prints it.
func (d Duration) String() string { return time.Duration(d).String() }

// Size is a byte count written as a string in TOML ("64MB", "512KB", "100B"). Units are
// powers of 1024, as people mean them for file and body limits.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}}

// UnmarshalText parses sizes such as 64MB.
func (s *Size) UnmarshalText(b []byte) error {
	text := strings.ToUpper(strings.TrimSpace(string(b)))
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(text, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 || n > (1<<62)/u.mult {
				break
			}
			*s = Size(n * u.mult)
			return nil
		}
	}
	return fmt.Errorf("%q is not a size like 512KB or 64MB", b)
}

// MarshalText writes the size in the largest unit that divides it.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String writes the size in the largest unit that divides it.
func (s Size) String() string {
	for _, u := range sizeUnits {
		if s != 0 && int64(s)%u.mult == 0 {
			return strconv.FormatInt(int64(s)/u.mult, 10) + u.suffix
		}
	}
	return "0B"
}

// Secret is a string that never appears in logs or formatted output; Reveal returns it.
type Secret string

// Reveal returns the secret's value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }

// String redacts the value so a secret printed by mistake leaks nothing.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue redacts the value in slog output.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
