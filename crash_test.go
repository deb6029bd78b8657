package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	indigorepo "github.com/bluesky-social/indigo/atproto/repo"
	"github.com/coder/websocket"

	"github.com/aerie-social/aerie/relay"
)

// TestMain lets the crash test run this test binary as the real server: with
// AERIE_TEST_SERVE set it behaves as the aerie command.
func TestMain(m *testing.M) {
	if os.Getenv("AERIE_TEST_SERVE") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// startServer runs the aerie command in a child process on dir and returns it with its
// base URL, read from the first log line.
func startServer(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "serve")
	cmd.Env = append(os.Environ(), "AERIE_TEST_SERVE=1", "AERIE_DATA_DIR="+dir, "AERIE_LISTEN=127.0.0.1:0",
		"AERIE_PLC_LISTEN=127.0.0.1:0", "AERIE_LOG_FORMAT=json", "AERIE_LOG_LEVEL=info")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(lines.Bytes(), &l) == nil && l.Msg == "listening" {
			go io.Copy(io.Discard, stderr)
			return cmd, "http://" + l.Addr
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("server exited before listening")
	return nil, ""
}

func postJSON(ctx context.Context, url, token string, body any) (int, map[string]any, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

// TestKillNineLosesNoAcknowledgedWrite writes under load, kills the server with SIGKILL,
// restarts it and checks that every acknowledged write is in the repo and in the log.
func TestKillNineLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server processes")
	}
	t.Parallel()
	dir := t.TempDir()
	cmd, base := startServer(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	status, acct, err := postJSON(ctx, base+"/xrpc/com.atproto.server.createAccount", "",
		map[string]string{"handle": "crash.test", "password": "crash-password"})
	if err != nil || status != 200 {
		t.Fatalf("createAccount = %d %v %v", status, acct, err)
	}
	did, token := acct["did"].(string), acct["accessJwt"].(string)

	// Four writers until the kill; every 200 is an acknowledged write.
	var mu sync.Mutex
	acked := map[string]string{} // uri -> cid
	revs := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status, out, err := postJSON(ctx, base+"/xrpc/com.atproto.repo.createRecord", token, map[string]any{
					"repo": did, "collection": "app.bsky.feed.post",
					"record": map[string]any{"text": fmt.Sprintf("writer %d post %d", w, i), "createdAt": "2026-11-25T12:00:00Z"},
				})
				if err != nil {
					return // the server is gone
				}
				if status == 200 {
					mu.Lock()
					acked[out["uri"].(string)] = out["cid"].(string)
					revs[out["commit"].(map[string]any)["rev"].(string)] = true
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(1500 * time.Millisecond) // let real load build up; this is a process test, not timing logic
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(stop)
	wg.Wait()
	t.Logf("%d writes acknowledged before SIGKILL", len(acked))
	if len(acked) < 10 {
		t.Fatalf("only %d writes acknowledged before the kill; the test needs load", len(acked))
	}

	cmd, base = startServer(t, dir)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for uri, c := range acked {
		parts := strings.Split(strings.TrimPrefix(uri, "at://"), "/")
		resp, err := http.Get(fmt.Sprintf("%s/xrpc/com.atproto.repo.getRecord?repo=%s&collection=%s&rkey=%s", base, parts[0], parts[1], parts[2]))
		if err != nil {
			t.Fatal(err)
		}
		var rec map[string]any
		json.NewDecoder(resp.Body).Decode(&rec)
		resp.Body.Close()
		if resp.StatusCode != 200 || rec["cid"] != c {
			t.Errorf("acknowledged %s (cid %s) after restart: %d %v", uri, c, resp.StatusCode, rec)
		}
	}
	resp, err := http.Get(base + "/xrpc/com.atproto.sync.getRepo?did=" + did)
	if err != nil {
		t.Fatal(err)
	}
	commit, _, err := indigorepo.LoadRepoFromCAR(ctx, resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("repo after restart does not load: %v", err)
	}
	resp, _ = http.Get(base + "/xrpc/com.atproto.sync.getLatestCommit?did=" + did)
	var latest map[string]string
	json.NewDecoder(resp.Body).Decode(&latest)
	resp.Body.Close()
	if latest["rev"] != commit.Rev {
		t.Errorf("getLatestCommit rev %s, repo commit rev %s", latest["rev"], commit.Rev)
	}

	// The log from cursor 0: strictly increasing seqs, every acknowledged commit present,
	// and the repo's head reached by a #commit or by the repair's #sync.
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/xrpc/com.atproto.sync.subscribeRepos?cursor=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(5 << 20)
	var lastSeq int64
	seen := map[string]bool{}
	head := false
	for !head || len(seen) < len(revs) {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, data, err := conn.Read(rctx)
		rcancel()
		if err != nil {
			t.Fatalf("firehose ended after seq %d with %d of %d acknowledged commits (head seen: %v): %v", lastSeq, len(seen), len(revs), head, err)
		}
		ev, err := relay.DecodeFrame(data)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq <= lastSeq {
			t.Fatalf("seq %d after %d", ev.Seq, lastSeq)
		}
		lastSeq = ev.Seq
		switch {
		case ev.Commit != nil:
			if revs[ev.Commit.Rev] {
				seen[ev.Commit.Rev] = true
			}
			head = head || ev.Commit.Rev == commit.Rev
		case ev.Sync != nil:
			head = head || ev.Sync.Rev == commit.Rev
		}
	}
}
