package interop

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
)

// testdata is the vendored vector tree. The directory form of go:embed
// leaves out names starting with "." or "_", and the upstream tree has none.
//
//go:embed testdata
var testdata embed.FS

// root is the directory inside testdata that FS exposes as its root.
const root = "testdata"

// errCarriageReturn is returned for a line file that contains a CR byte.
// Upstream files are LF-only, so a CR means the checkout rewrote line
// endings (git core.autocrlf), which would silently change every vector.
var errCarriageReturn = errors.New("carriage return in line file (line endings rewritten by the checkout?)")

// errNoVectors is returned for a line file with only comments and blank
// lines: a conformance loop over it would pass while testing nothing.
var errNoVectors = errors.New("no vectors in line file")

// FS returns the vendored vectors as a read-only file system rooted at
// testdata/, so "syntax/did_syntax_valid.txt" names a file in it.
func FS() fs.FS {
	sub, err := fs.Sub(testdata, root)
	if err != nil {
		// fs.Sub fails only when its directory argument is not a valid
		// path, and root is a constant valid one: reaching this is a bug.
		panic(fmt.Sprintf("interop: sub %q: %v", root, err))
	}
	return sub
}

// ReadFile returns the contents of the vector file at path (relative to
// testdata/). A missing or unreadable file fails the test with t.Fatalf.
func ReadFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := fs.ReadFile(FS(), path)
	if err != nil {
		t.Fatalf("interop: read vector file %s: %v", path, err)
	}
	return b
}

// Lines returns the vectors of a line-list file such as
// "syntax/handle_syntax_valid.txt": one vector per line, in file order,
// without empty lines and lines whose first byte is '#'. Every other line is
// kept exactly as written, leading and trailing spaces included, because
// several invalid vectors are invalid only because of that whitespace. A
// missing file, a file with a carriage return or a file with no vectors
// fails the test.
func Lines(t testing.TB, path string) []string {
	t.Helper()
	lines, err := splitLines(ReadFile(t, path))
	if err != nil {
		t.Fatalf("interop: read vector lines %s: %v", path, err)
	}
	return lines
}

// JSON decodes the JSON vector file at path into v, as json.Unmarshal does.
// A missing file or a decode error fails the test.
func JSON(t testing.TB, path string, v any) {
	t.Helper()
	if err := json.Unmarshal(ReadFile(t, path), v); err != nil {
		t.Fatalf("interop: decode vector file %s: %v", path, err)
	}
}

// splitLines applies the upstream line-file rule: a line is skipped when
// len(line) == 0 || line[0] == '#', and is otherwise never trimmed.
func splitLines(data []byte) ([]string, error) {
	if bytes.IndexByte(data, '\r') >= 0 {
		return nil, errCarriageReturn
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, errNoVectors
	}
	return out, nil
}
