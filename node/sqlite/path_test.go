package sqlite

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOpenPathsWithURICharacters: file names from did:web DIDs hold "%3A"; the DSN is a URI,
// so the path must reach the file system exactly as given.
func TestOpenPathsWithURICharacters(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"did:web:localhost%3A8080", "a?b", "c#d", "e%25f"} {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, "x.sqlite")
		db, err := Open(t.Context(), file, Options{Migrations: testMigrations()})
		if err != nil {
			t.Fatalf("Open(%q) = %v", file, err)
		}
		db.Close()
		if _, err := os.Stat(file); err != nil {
			t.Errorf("Open(%q) did not create that file: %v", file, err)
		}
	}
}
