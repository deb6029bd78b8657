package interop

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the calling goroutine, as the real one does, without failing the test
// that owns it. Other methods go to the embedded real TB.
type fatalRecorder struct {
	testing.TB
	mu     sync.Mutex
	failed string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// run calls fn with r on a new goroutine and returns the Fatalf message,
// or "" when fn returned normally.
func (r *fatalRecorder) run(fn func(testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func TestFSHoldsEveryVectorDirectory(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"crypto", "data-model", "firehose", "lexicon", "lexicon/catalog", "mst", "syntax", "from-atproto"} {
		if _, err := fs.ReadDir(FS(), dir); err != nil {
			t.Errorf("fs.ReadDir(FS(), %q): %v", dir, err)
		}
	}
	if _, err := fs.Stat(FS(), "LICENSE-CC0"); err != nil {
		t.Errorf("fs.Stat(FS(), %q): %v", "LICENSE-CC0", err)
	}
}

// TestLinesCounts checks Lines against the vector counts that
// testdata/README.md gives for every syntax file, so a change to the skip
// rule (trimming, say) or to the vendored files is noticed.
func TestLinesCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want int
	}{
		{"atidentifier_syntax_invalid", 22},
		{"atidentifier_syntax_valid", 11},
		{"aturi_syntax_invalid", 72},
		{"aturi_syntax_valid", 23},
		{"cid_syntax_invalid", 10},
		{"cid_syntax_valid", 8},
		{"datetime_parse_invalid", 7},
		{"datetime_syntax_invalid", 45},
		{"datetime_syntax_valid", 35},
		{"did_syntax_invalid", 18},
		{"did_syntax_valid", 24},
		{"handle_syntax_invalid", 48},
		{"handle_syntax_valid", 71},
		{"language_parse_invalid", 4},
		{"language_syntax_invalid", 7},
		{"language_syntax_valid", 18},
		{"nsid_syntax_invalid", 27},
		{"nsid_syntax_valid", 25},
		{"recordkey_syntax_invalid", 11},
		{"recordkey_syntax_valid", 16},
		{"tid_syntax_invalid", 9},
		{"tid_syntax_valid", 4},
		{"uri_syntax_invalid", 12},
		{"uri_syntax_valid", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := "syntax/" + tt.name + ".txt"
			if got := len(Lines(t, path)); got != tt.want {
				t.Errorf("len(Lines(%q)) = %d, want %d", path, got, tt.want)
			}
		})
	}
	const keys = "mst/example_keys.txt"
	if got := len(Lines(t, keys)); got != 156 {
		t.Errorf("len(Lines(%q)) = %d, want 156", keys, got)
	}
}

func TestLinesKeepsWhitespaceAndSkipsComments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		path    string
		present []string
		absent  []string
	}{
		{
			name:    "handle leading space",
			path:    "syntax/handle_syntax_invalid.txt",
			present: []string{" john.test", "john.test "},
			absent:  []string{"john.test"},
		},
		{
			name:    "uri two trailing spaces",
			path:    "syntax/uri_syntax_invalid.txt",
			present: []string{"https://example.com/trailing-whitespace  ", "  https://example.com/path"},
		},
		{
			name:    "datetime trailing space",
			path:    "syntax/datetime_syntax_invalid.txt",
			present: []string{"1985-04-12T23:20:50.123Z "},
		},
		{
			name:   "commented-out vectors",
			path:   "syntax/recordkey_syntax_invalid.txt",
			absent: []string{"#extra", "extra"},
		},
		{
			name:   "commented-out aturi",
			path:   "syntax/aturi_syntax_invalid.txt",
			absent: []string{"#at://did:plc:asdf123"},
		},
		{
			name:   "commented-out language",
			path:   "syntax/language_syntax_invalid.txt",
			absent: []string{"#de-419-DE", "de-419-DE"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lines := Lines(t, tt.path)
			for _, s := range tt.present {
				if !slices.Contains(lines, s) {
					t.Errorf("Lines(%q) lacks %q", tt.path, s)
				}
			}
			for _, s := range tt.absent {
				if slices.Contains(lines, s) {
					t.Errorf("Lines(%q) has %q", tt.path, s)
				}
			}
		})
	}
}

func TestSplitLines(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr error
	}{
		{name: "plain", in: "a\nb\n", want: []string{"a", "b"}},
		{name: "no final newline", in: "a\nb", want: []string{"a", "b"}},
		{name: "comments and blanks", in: "# c\n\na\n#b\n\n", want: []string{"a"}},
		{name: "comment only at first byte", in: " #a\n", want: []string{" #a"}},
		{name: "whitespace kept", in: " a\nb  \n\t\n", want: []string{" a", "b  ", "\t"}},
		{name: "carriage return", in: "a\r\nb\r\n", wantErr: errCarriageReturn},
		{name: "only comments", in: "# c\n\n", wantErr: errNoVectors},
		{name: "empty", in: "", wantErr: errNoVectors},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := splitLines([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("splitLines(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("splitLines(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	var cases []struct {
		Name    string         `json:"name"`
		Lexicon map[string]any `json:"lexicon"`
	}
	JSON(t, "lexicon/lexicon-valid.json", &cases)
	if len(cases) != 3 {
		t.Fatalf("JSON(lexicon/lexicon-valid.json) decoded %d cases, want 3", len(cases))
	}
	for _, c := range cases {
		if c.Name == "" || c.Lexicon["id"] == nil {
			t.Errorf("JSON(lexicon/lexicon-valid.json) case %+v lacks name or lexicon id", c)
		}
	}
}

// TestMissingVectorFails checks that every reader fails the test, rather
// than skipping or returning nothing, when the vector is missing or bad.
func TestMissingVectorFails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		fn   func(testing.TB)
		want string
	}{
		{
			name: "ReadFile missing",
			fn:   func(tb testing.TB) { ReadFile(tb, "syntax/no_such_file.txt") },
			want: "syntax/no_such_file.txt",
		},
		{
			name: "Lines missing",
			fn:   func(tb testing.TB) { Lines(tb, "syntax/no_such_file.txt") },
			want: "syntax/no_such_file.txt",
		},
		{
			name: "JSON missing",
			fn:   func(tb testing.TB) { JSON(tb, "no/such.json", new(any)) },
			want: "no/such.json",
		},
		{
			name: "JSON not JSON",
			fn:   func(tb testing.TB) { JSON(tb, "syntax/tid_syntax_valid.txt", new(any)) },
			want: "decode vector file syntax/tid_syntax_valid.txt",
		},
		{
			name: "Lines escapes root",
			fn:   func(tb testing.TB) { Lines(tb, "../interop.go") },
			want: "../interop.go",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := &fatalRecorder{TB: t}
			got := r.run(tt.fn)
			if !strings.Contains(got, tt.want) {
				t.Errorf("%s: Fatalf message = %q, want it to contain %q", tt.name, got, tt.want)
			}
		})
	}
}
