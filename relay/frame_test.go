package relay

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/repo"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// sequenced returns ev as the sequencer would emit it.
func sequenced(t testing.TB, ev *Event, seq int64) *Event {
	t.Helper()
	ev.setSeq(seq, testTime)
	if err := ev.encode(); err != nil {
		t.Fatalf("encode(%s) = %v", ev.Kind(), err)
	}
	return ev
}

func TestFrameHeaders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		// {t: "#commit", op: 1}: map(2), "t", "#commit", "op", 1
		{"message", appendMessageHeader(nil, "#commit"), append(append([]byte{0xa2, 0x61, 't', 0x67}, "#commit"...), 0x62, 'o', 'p', 0x01)},
		// {op: -1} {error: "FutureCursor"}
		{"error", ErrorFrame("FutureCursor", ""), append([]byte{0xa1, 0x62, 'o', 'p', 0x20, 0xa1, 0x65, 'e', 'r', 'r', 'o', 'r', 0x6c}, "FutureCursor"...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if !bytes.Equal(tt.got, tt.want) {
				t.Errorf("%s header = % x, want % x", tt.name, tt.got, tt.want)
			}
		})
	}
}

func TestDecodeFrame(t *testing.T) {
	t.Parallel()
	commit := sequenced(t, commitEvent("did:plc:a", 3, 64), 9)
	tests := []struct {
		name      string
		frame     []byte
		wantKind  string
		wantSeq   int64
		wantError string // error frame name
		wantErr   error
	}{
		{"commit", commit.Frame(), KindCommit, 9, "", nil},
		{"identity", sequenced(t, NewIdentity("did:plc:a", "a.test"), 1).Frame(), KindIdentity, 1, "", nil},
		{"account", sequenced(t, NewAccount("did:plc:a", true, ""), 2).Frame(), KindAccount, 2, "", nil},
		{"info", InfoFrame("OutdatedCursor", "old"), KindInfo, 0, "", nil},
		{"error", ErrorFrame("ConsumerTooSlow", "bye"), "", 0, "ConsumerTooSlow", nil},
		{"unknown type", append(appendMessageHeader(nil, "#handle"), 0xa0), "", 0, "", ErrUnknownType},
		{"empty", nil, "", 0, "", ErrMalformedFrame},
		{"header only", appendMessageHeader(nil, "#commit"), "", 0, "", ErrMalformedFrame},
		{"trailing bytes", append(bytes.Clone(commit.Frame()), 0x00), "", 0, "", ErrMalformedFrame},
		{"truncated", commit.Frame()[:len(commit.Frame())-5], "", 0, "", ErrMalformedFrame},
		{"no op", []byte{0xa1, 0x61, 't', 0x61, 'x', 0xa0}, "", 0, "", ErrMalformedFrame},
		{"too big", make([]byte, MaxFrameSize+1), "", 0, "", ErrMalformedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev, err := DecodeFrame(tt.frame)
			var fe *FrameError
			switch {
			case tt.wantError != "":
				if !errors.As(err, &fe) || fe.Name != tt.wantError {
					t.Errorf("DecodeFrame(%s) = %v, want error frame %s", tt.name, err, tt.wantError)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("DecodeFrame(%s) = %v, want %v", tt.name, err, tt.wantErr)
				}
			case err != nil:
				t.Errorf("DecodeFrame(%s) = %v", tt.name, err)
			case ev.Kind() != tt.wantKind || ev.Seq != tt.wantSeq:
				t.Errorf("DecodeFrame(%s) = %s seq %d, want %s seq %d", tt.name, ev.Kind(), ev.Seq, tt.wantKind, tt.wantSeq)
			}
		})
	}
}

// TestNewSyncCAR checks the #sync blocks with indigo's CAR and commit reader.
func TestNewSyncCAR(t *testing.T) {
	t.Parallel()
	data := cidOf([]byte("mst root"))
	commit := repo.Commit{DID: "did:plc:alice", Version: repo.ATPROTO_REPO_VERSION, Data: data, Rev: "3jzfcijpj2z2a", Sig: []byte("sig")}
	var block bytes.Buffer
	if err := commit.MarshalCBOR(&block); err != nil {
		t.Fatal(err)
	}
	c := cidOf(block.Bytes())
	ev, err := NewSync("did:plc:alice", "3jzfcijpj2z2a", c, block.Bytes())
	if err != nil {
		t.Fatalf("NewSync = %v", err)
	}
	got, gotCID, err := repo.LoadCommitFromCAR(context.Background(), bytes.NewReader(ev.Sync.Blocks))
	if err != nil {
		t.Fatalf("LoadCommitFromCAR(#sync blocks) = %v", err)
	}
	if !gotCID.Equals(c) || got.DID != "did:plc:alice" || got.Rev != "3jzfcijpj2z2a" {
		t.Errorf("#sync CAR holds %s %s %s, want %s did:plc:alice 3jzfcijpj2z2a", gotCID, got.DID, got.Rev, c)
	}
	if _, err := NewSync("did:plc:alice", "3jzfcijpj2z2a", c, []byte("other")); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("NewSync(mismatched block) = %v, want ErrInvalidEvent", err)
	}
	big := make([]byte, 20_000)
	if _, err := NewSync("did:plc:alice", "3jzfcijpj2z2a", cidOf(big), big); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("NewSync(20 kB block) = %v, want ErrInvalidEvent", err)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(sequenced(f, commitEvent("did:plc:a", 3, 64), 9).Frame())
	f.Add(sequenced(f, NewIdentity("did:plc:a", "a.test"), 1).Frame())
	f.Add(sequenced(f, NewAccount("did:plc:a", false, "takendown"), 2).Frame())
	block := []byte{0xa0}
	syncEv, _ := NewSync("did:plc:a", syntax.NewTIDFromTime(time.Unix(0, 0), 0), cidOf(block), block)
	f.Add(sequenced(f, syncEv, 3).Frame())
	f.Add(InfoFrame("OutdatedCursor", "x"))
	f.Add(ErrorFrame("FutureCursor", "y"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeFrame(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to a frame that decodes to the same kind and seq.
		if ev.Info != nil {
			return
		}
		again := &Event{Commit: ev.Commit, Identity: ev.Identity, Account: ev.Account, Sync: ev.Sync}
		if err := again.encode(); err != nil {
			return // e.g. an undefined link cbor-gen reads but will not write
		}
		ev2, err := DecodeFrame(again.Frame())
		if err != nil || ev2.Kind() != ev.Kind() || ev2.Seq != ev.Seq {
			t.Fatalf("re-encoded %s seq %d decodes to %v, %v", ev.Kind(), ev.Seq, ev2, err)
		}
	})
}
