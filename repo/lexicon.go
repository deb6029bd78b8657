package repo

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/bluesky-social/indigo/atproto/lexicon"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/rivo/uniseg"
)

// lexiconFiles is our vendored copy of the com.atproto and app.bsky lexicons
// (with their licence files), so validation never depends on the network.
//
//go:embed lexicons
var lexiconFiles embed.FS

// ValidationMode is the validate parameter of the repo write endpoints
// (atproto-reference.md §9).
type ValidationMode int

const (
	// ValidateKnown (validate absent) validates records whose lexicon is
	// known and lets unknown types through with status "unknown".
	ValidateKnown ValidationMode = iota
	// ValidateRequired (validate: true) also rejects unknown types.
	ValidateRequired
	// ValidateSkip (validate: false) checks nothing beyond the data model.
	ValidateSkip
)

// Validation statuses returned by ValidateRecord, as the write endpoints
// report them in validationStatus.
const (
	// StatusValid means the record was checked against its lexicon.
	StatusValid = "valid"
	// StatusUnknown means no lexicon was applied.
	StatusUnknown = "unknown"
)

// Validator checks records against a lexicon catalog. It is read-only after
// construction and safe for concurrent use.
type Validator struct {
	fsys fs.FS
	// The catalog is parsed on first use: the embedded lexicons take tens of milliseconds
	// to load, which would otherwise be most of the node's startup time.
	once sync.Once
	cat  *lexicon.BaseCatalog
	err  error
}

// NewValidator returns a Validator over the embedded lexicons.
func NewValidator() (*Validator, error) {
	sub, err := fs.Sub(lexiconFiles, "lexicons")
	if err != nil {
		return nil, fmt.Errorf("open embedded lexicons: %w", err)
	}
	return NewValidatorFS(sub)
}

// NewValidatorFS returns a Validator over every .json lexicon file in fsys
// (walked recursively); other files are ignored. The files are read on first use; a
// malformed one makes every validation fail with its error.
func NewValidatorFS(fsys fs.FS) (*Validator, error) {
	return &Validator{fsys: fsys}, nil
}

// catalog returns the parsed lexicons, loading them the first time.
func (v *Validator) catalog() (*lexicon.BaseCatalog, error) {
	v.once.Do(func() { v.cat, v.err = loadCatalog(v.fsys) })
	return v.cat, v.err
}

func loadCatalog(fsys fs.FS) (*lexicon.BaseCatalog, error) {
	cat := lexicon.NewBaseCatalog()
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || path.Ext(p) != ".json" {
			return nil
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		var sf lexicon.SchemaFile
		if err := json.Unmarshal(b, &sf); err != nil {
			return fmt.Errorf("parse lexicon %s: %w", p, err)
		}
		if err := cat.AddSchemaFile(sf); err != nil {
			return fmt.Errorf("add lexicon %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load lexicons: %w", err)
	}
	return cat, nil
}

// ValidateRecord checks a parsed record (Record.Data) of collection against
// its lexicon according to mode, and returns the validation status: "valid"
// when a lexicon was applied, "unknown" when none was (mode ValidateSkip, or
// an unknown type under ValidateKnown). The record's $type must equal
// collection in every mode. Errors wrap ErrInvalidRecord and name the field at
// fault, as in "Record/text must not be longer than 300 graphemes".
func (v *Validator) ValidateRecord(collection syntax.NSID, data map[string]any, mode ValidationMode) (string, error) {
	if typ, _ := data["$type"].(string); typ != string(collection) {
		return "", fmt.Errorf("%w: Record/$type must be %s", ErrInvalidRecord, collection)
	}
	if mode == ValidateSkip {
		return StatusUnknown, nil
	}
	cat, err := v.catalog()
	if err != nil {
		return "", err
	}
	schema, err := cat.Resolve(string(collection))
	if err != nil {
		if mode == ValidateRequired {
			return "", fmt.Errorf("%w: lexicon not found: %s", ErrInvalidRecord, collection)
		}
		return StatusUnknown, nil
	}
	rec, ok := schema.Def.(lexicon.SchemaRecord)
	if !ok {
		return "", fmt.Errorf("%w: %s is not a record type", ErrInvalidRecord, collection)
	}
	w := lexWalker{cat: cat}
	if err := w.object("Record", string(collection), rec.Record, data); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return StatusValid, nil
}

// lexWalker mirrors indigo's lexicon validation (same rules, same leaf
// checks, which it calls) but keeps the path of the value being checked, so
// a client learns which field failed. Properties are visited in sorted order
// so the first error reported is stable.
type lexWalker struct {
	cat   lexicon.Catalog
	flags lexicon.ValidateFlags
}

// fieldError is a validation failure at a path.
func fieldError(p string, err error) error {
	return fmt.Errorf("%s: %w", p, err)
}

// fullRef qualifies a local "#frag" reference with the NSID of the schema it
// appears in (indigo keeps its own copy unexported).
func fullRef(base, ref string) string {
	if strings.HasPrefix(ref, "#") {
		return base + ref
	}
	return ref
}

// nsidOf returns the NSID part of a schema ID such as "app.bsky.feed.post#main".
func nsidOf(id string) string {
	nsid, _, _ := strings.Cut(id, "#")
	return nsid
}

func (w *lexWalker) object(p, base string, s lexicon.SchemaObject, d map[string]any) error {
	for _, k := range s.Required {
		if _, ok := d[k]; !ok {
			return fmt.Errorf("%s must have the property %q", p, k)
		}
	}
	keys := make([]string, 0, len(s.Properties))
	for k := range s.Properties {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v, ok := d[k]
		if !ok || (v == nil && s.IsNullable(k)) {
			continue
		}
		if err := w.data(p+"/"+k, base, s.Properties[k].Inner, v); err != nil {
			return err
		}
	}
	return nil
}

func (w *lexWalker) data(p, base string, def any, d any) error {
	switch s := def.(type) {
	case lexicon.SchemaBoolean:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaInteger:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaString:
		return w.str(p, s, d)
	case lexicon.SchemaBytes:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaCIDLink:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaBlob:
		return leaf(p, s.Validate(d, w.flags))
	case lexicon.SchemaUnknown:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaToken:
		return leaf(p, s.Validate(d))
	case lexicon.SchemaArray:
		arr, ok := d.([]any)
		if !ok {
			return fmt.Errorf("%s must be an array", p)
		}
		if s.MinLength != nil && len(arr) < *s.MinLength {
			return fmt.Errorf("%s must not have fewer than %d elements", p, *s.MinLength)
		}
		if s.MaxLength != nil && len(arr) > *s.MaxLength {
			return fmt.Errorf("%s must not have more than %d elements", p, *s.MaxLength)
		}
		for i, el := range arr {
			if err := w.data(p+"/"+strconv.Itoa(i), base, s.Items.Inner, el); err != nil {
				return err
			}
		}
		return nil
	case lexicon.SchemaObject:
		obj, ok := d.(map[string]any)
		if !ok {
			return fmt.Errorf("%s must be an object", p)
		}
		return w.object(p, base, s, obj)
	case lexicon.SchemaRef:
		ref := fullRef(base, s.Ref)
		next, err := w.cat.Resolve(ref)
		if err != nil {
			return fieldError(p, err)
		}
		return w.data(p, nsidOf(next.ID), next.Def, d)
	case lexicon.SchemaUnion:
		return w.union(p, base, s, d)
	default:
		return fmt.Errorf("%s: unhandled schema type %s", p, reflect.TypeOf(def))
	}
}

func leaf(p string, err error) error {
	if err != nil {
		return fieldError(p, err)
	}
	return nil
}

// str gives the common length failures the reference PDS's wording and
// leaves the rest (type, const, enum, formats) to indigo's check.
func (w *lexWalker) str(p string, s lexicon.SchemaString, d any) error {
	v, ok := d.(string)
	if !ok {
		return fmt.Errorf("%s must be a string", p)
	}
	if s.MaxLength != nil && len(v) > *s.MaxLength {
		return fmt.Errorf("%s must not be longer than %d characters", p, *s.MaxLength)
	}
	if s.MinLength != nil && len(v) < *s.MinLength {
		return fmt.Errorf("%s must not be shorter than %d characters", p, *s.MinLength)
	}
	if s.MaxGraphemes != nil || s.MinGraphemes != nil {
		n := uniseg.GraphemeClusterCount(v)
		if s.MaxGraphemes != nil && n > *s.MaxGraphemes {
			return fmt.Errorf("%s must not be longer than %d graphemes", p, *s.MaxGraphemes)
		}
		if s.MinGraphemes != nil && n < *s.MinGraphemes {
			return fmt.Errorf("%s must not be shorter than %d graphemes", p, *s.MinGraphemes)
		}
	}
	return leaf(p, s.Validate(v, w.flags))
}

func (w *lexWalker) union(p, base string, s lexicon.SchemaUnion, d any) error {
	obj, ok := d.(map[string]any)
	if !ok {
		return fmt.Errorf("%s must be an object which includes the \"$type\" property", p)
	}
	t, ok := obj["$type"].(string)
	if !ok {
		return fmt.Errorf("%s must be an object which includes the \"$type\" property", p)
	}
	for _, r := range s.Refs {
		if fullRef(base, r) != t {
			continue
		}
		def, err := w.cat.Resolve(t)
		if err != nil {
			return fieldError(p, fmt.Errorf("resolve union variant %s: %w", t, err))
		}
		return w.data(p, nsidOf(def.ID), def.Def, d)
	}
	if s.Closed != nil && *s.Closed {
		return fmt.Errorf("%s $type must be one of %s", p, strings.Join(s.Refs, ", "))
	}
	// An open union accepts unknown variants; a variant we know is still
	// checked, as indigo does.
	def, err := w.cat.Resolve(t)
	if err != nil {
		return nil
	}
	return w.data(p, nsidOf(def.ID), def.Def, d)
}
