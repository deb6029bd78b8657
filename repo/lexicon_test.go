package repo

import (
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/aerie-social/aerie/node/interop"
	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

type recordDataCase struct {
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

// TestLexiconRecordVectors runs the interop record-data vectors against the
// interop catalog, and checks each verdict against indigo's validator.
func TestLexiconRecordVectors(t *testing.T) {
	t.Parallel()
	sub, err := fs.Sub(interop.FS(), "lexicon/catalog")
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidatorFS(sub)
	if err != nil {
		t.Fatalf("NewValidatorFS(catalog) = %v", err)
	}
	for _, file := range []struct {
		path  string
		valid bool
	}{
		{"lexicon/record-data-valid.json", true},
		{"lexicon/record-data-invalid.json", false},
	} {
		var cases []recordDataCase
		interop.JSON(t, file.path, &cases)
		if len(cases) == 0 {
			t.Fatalf("%s has no cases", file.path)
		}
		for _, tt := range cases {
			t.Run(file.path+"/"+tt.Name, func(t *testing.T) {
				t.Parallel()
				data, err := parseJSONData(tt.Data)
				if err != nil {
					if file.valid {
						t.Fatalf("parseJSONData(%s) = %v", tt.Data, err)
					}
					return // invalid already at the data-model level
				}
				typ, _ := data["$type"].(string)
				status, err := v.ValidateRecord(syntax.NSID(typ), data, ValidateRequired)
				oracle := lexicon.ValidateRecord(v.cat, data, typ, 0)
				if file.valid {
					if err != nil || status != StatusValid {
						t.Errorf("ValidateRecord(%s) = %q, %v; want valid", tt.Name, status, err)
					}
				} else if !errors.Is(err, ErrInvalidRecord) {
					t.Errorf("ValidateRecord(%s) = %q, %v; want ErrInvalidRecord", tt.Name, status, err)
				}
				if (err == nil) != (oracle == nil) {
					t.Errorf("ValidateRecord(%s) = %v, indigo says %v", tt.Name, err, oracle)
				}
			})
		}
	}
}

func TestValidatorModes(t *testing.T) {
	t.Parallel()
	v, err := NewValidator()
	if err != nil {
		t.Fatalf("NewValidator() = %v", err)
	}
	post := func(fields string) map[string]any {
		t.Helper()
		rec, err := RecordFromJSON([]byte(`{"$type":"app.bsky.feed.post",` + fields + `}`))
		if err != nil {
			t.Fatalf("RecordFromJSON = %v", err)
		}
		return rec.Data
	}
	unknown, err := RecordFromJSON([]byte(`{"$type":"com.example.thing","x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	good := post(`"text":"hi","createdAt":"2024-01-01T00:00:00Z"`)
	long := post(`"text":"` + strings.Repeat("é", 301) + `","createdAt":"2024-01-01T00:00:00Z"`)
	badImage := post(`"text":"hi","createdAt":"2024-01-01T00:00:00Z","embed":{"$type":"app.bsky.embed.images","images":[{"alt":"a","image":{"$type":"blob","ref":{"$link":"bafkreiccldh766hwcnuxnf2wh6jgzepf2nlu2lvcllt63eww5p6chi4ity"},"mimeType":"text/plain","size":10}}]}`)
	tests := []struct {
		name       string
		collection syntax.NSID
		data       map[string]any
		mode       ValidationMode
		wantStatus string
		wantErr    string // substring; empty for success
	}{
		{"known valid", "app.bsky.feed.post", good, ValidateKnown, StatusValid, ""},
		{"required valid", "app.bsky.feed.post", good, ValidateRequired, StatusValid, ""},
		{"skip", "app.bsky.feed.post", long, ValidateSkip, StatusUnknown, ""},
		{"too many graphemes", "app.bsky.feed.post", long, ValidateKnown, "", "Record/text must not be longer than 300 graphemes"},
		{"missing field", "app.bsky.feed.post", post(`"text":"hi"`), ValidateKnown, "", `Record must have the property "createdAt"`},
		{"bad datetime", "app.bsky.feed.post", post(`"text":"hi","createdAt":"yesterday"`), ValidateKnown, "", "Record/createdAt"},
		{"nested blob mime", "app.bsky.feed.post", badImage, ValidateKnown, "", "Record/embed/images/0/image"},
		{"unknown allowed", "com.example.thing", unknown.Data, ValidateKnown, StatusUnknown, ""},
		{"unknown required", "com.example.thing", unknown.Data, ValidateRequired, "", "lexicon not found"},
		{"unknown skipped", "com.example.thing", unknown.Data, ValidateSkip, StatusUnknown, ""},
		{"type mismatch", "app.bsky.feed.like", good, ValidateKnown, "", "Record/$type must be app.bsky.feed.like"},
		{"type mismatch skipped", "app.bsky.feed.like", good, ValidateSkip, "", "Record/$type"},
		{"not a record type", "app.bsky.feed.getTimeline", map[string]any{"$type": "app.bsky.feed.getTimeline"}, ValidateKnown, "", "not a record type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, err := v.ValidateRecord(tt.collection, tt.data, tt.mode)
			if tt.wantErr == "" {
				if err != nil || status != tt.wantStatus {
					t.Errorf("ValidateRecord(%s) = %q, %v; want %q", tt.collection, status, err, tt.wantStatus)
				}
				return
			}
			if !errors.Is(err, ErrInvalidRecord) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ValidateRecord(%s) = %v, want ErrInvalidRecord containing %q", tt.collection, err, tt.wantErr)
			}
		})
	}
}

func BenchmarkValidatePost(b *testing.B) {
	v, err := NewValidator()
	if err != nil {
		b.Fatal(err)
	}
	rec, err := RecordFromJSON([]byte(`{"$type":"app.bsky.feed.post","text":"Hello from Aerie, a typical short post.","langs":["en"],"createdAt":"2026-11-25T21:00:00.000Z"}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.ValidateRecord("app.bsky.feed.post", rec.Data, ValidateKnown); err != nil {
			b.Fatal(err)
		}
	}
}
