package identity

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// readAuditLog reads one vendored audit-log vector; a missing file fails the test.
func readAuditLog(t testing.TB, path string) []LogEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read vector: %v", err)
	}
	var entries []LogEntry
	if err := json.Unmarshal(b, &entries); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return entries
}

func vectorFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "plc-audit-log", dir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors in testdata/plc-audit-log/%s: %v", dir, err)
	}
	return files
}

func TestVerifyAuditLogValidVectors(t *testing.T) {
	t.Parallel()
	for _, file := range vectorFiles(t, "valid") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			entries := readAuditLog(t, file)
			if err := VerifyAuditLog(entries[0].DID, entries); err != nil {
				t.Errorf("VerifyAuditLog(%s) = %v, want nil", file, err)
			}
			// Our encoder must rebuild the JSON the directory served: same fields, same values.
			raw := readRawOps(t, file)
			for i, e := range entries {
				got, err := json.Marshal(e.Operation)
				if err != nil {
					t.Fatalf("Marshal op %d: %v", i, err)
				}
				var gotAny, wantAny any
				json.Unmarshal(got, &gotAny)
				json.Unmarshal(raw[i], &wantAny)
				if !jsonEqual(gotAny, wantAny) {
					t.Errorf("op %d re-encoded as %s, want %s", i, got, raw[i])
				}
			}
		})
	}
}

func TestVerifyAuditLogInvalidVectors(t *testing.T) {
	t.Parallel()
	for _, file := range vectorFiles(t, "invalid") {
		t.Run(filepath.Base(file), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var entries []LogEntry
			if err := json.Unmarshal(b, &entries); err != nil {
				// Some vectors are refused already by the strict operation parser.
				if !errors.Is(err, ErrInvalidOperation) {
					t.Errorf("decode %s = %v, want ErrInvalidOperation", file, err)
				}
				return
			}
			if err := VerifyAuditLog(entries[0].DID, entries); err == nil {
				t.Errorf("VerifyAuditLog(%s) = nil, want an error", file)
			}
		})
	}
}

func readRawOps(t *testing.T, path string) []json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct {
		Operation json.RawMessage `json:"operation"`
	}
	if err := json.Unmarshal(b, &entries); err != nil {
		t.Fatal(err)
	}
	out := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		out[i] = e.Operation
	}
	return out
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
