package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// UsageError is a mistake on the command line; the command exits with status 2.
type UsageError struct{ Msg string }

// Error returns the message for the terminal.
func (e UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }

// AdminUsage documents the account and invite commands.
const AdminUsage = `Usage:
  aerie account create --handle H [--email E] [--password P]
  aerie account list
  aerie account deactivate|activate|delete ACCOUNT
  aerie account reset-password ACCOUNT [--password P]
  aerie account usage
  aerie invite create [--uses N] [--for DID]
  aerie blobs gc
  aerie reindex
  aerie backfill ACCOUNT

ACCOUNT is a handle or a DID (for backfill, an account on another server: it is followed
by the crawler from now on and its repo is fetched, verified and indexed at once). These commands talk to the running node (aerie serve) over
its admin API at http://<listen>, authenticated with admin_password from the same config
(--config, AERIE_CONFIG, AERIE_*), so events reach the firehose as for any other change.
Where --password is omitted, a random one is generated and printed.
`

// adminClient calls the node's XRPC API as the admin.
type adminClient struct {
	base     string
	password string
	hc       *http.Client
}

func (c *adminClient) call(ctx context.Context, method, nsid string, params url.Values, body, out any) error {
	u := c.base + "/xrpc/" + nsid
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth("admin", c.password)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("reach the node at %s (is `aerie serve` running?): %w", c.base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("read %s response: %w", nsid, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error, Message string }
		json.Unmarshal(raw, &e)
		return fmt.Errorf("%s: %s: %s", nsid, e.Error, e.Message)
	}
	if out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// resolveAccount turns a handle or DID into a hosted account's DID.
func (c *adminClient) resolveAccount(ctx context.Context, account string) (string, error) {
	var out struct {
		DID string `json:"did"`
	}
	if err := c.call(ctx, "GET", "com.atproto.repo.describeRepo", url.Values{"repo": {account}}, nil, &out); err != nil {
		return "", err
	}
	return out.DID, nil
}

func randomPassword() string {
	var b [18]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// RunAdminCommand runs `aerie account ...` or `aerie invite ...` (group) against the node
// described by cfg.
func RunAdminCommand(ctx context.Context, cfg Config, group string, args []string, stdout io.Writer) error {
	// reindex is a command of its own; the others are groups of subcommands.
	if group == "reindex" || group == "backfill" {
		args = append([]string{""}, args...)
	}
	if len(args) == 0 {
		return usagef("%s: missing subcommand; run 'aerie %s --help'", group, group)
	}
	if cfg.AdminPassword.Reveal() == "" {
		return errors.New("admin_password is not set (config or AERIE_ADMIN_PASSWORD): the admin API is off")
	}
	c := &adminClient{base: "http://" + cfg.Listen, password: cfg.AdminPassword.Reveal(), hc: &http.Client{Timeout: 30 * time.Second}}
	sub, rest := args[0], args[1:]
	fs := flag.NewFlagSet(group+" "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	handle := fs.String("handle", "", "handle, e.g. alice.test")
	email := fs.String("email", "", "email address")
	password := fs.String("password", "", "password (generated when omitted)")
	uses := fs.Int("uses", 1, "how many accounts the invite code can create")
	forDID := fs.String("for", "", "account the invite code belongs to")
	// Flags may come after the ACCOUNT argument too, so parse around positionals.
	var positional []string
	for {
		if err := fs.Parse(rest); err != nil {
			return usagef("%s %s: %v", group, sub, err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	arg := func() (string, error) {
		if len(positional) != 1 {
			return "", usagef("%s %s: takes one ACCOUNT (handle or DID)", group, sub)
		}
		return c.resolveAccount(ctx, positional[0])
	}
	switch group + " " + sub {
	case "account create":
		if *handle == "" {
			return usagef("account create: --handle is required")
		}
		pw := *password
		if pw == "" {
			pw = randomPassword()
		}
		var out struct{ DID, Handle string }
		// Basic auth as admin lets the node skip the invite requirement.
		if err := c.call(ctx, "POST", "com.atproto.server.createAccount", nil,
			map[string]string{"handle": *handle, "email": *email, "password": pw}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created %s (%s)\n", out.Handle, out.DID)
		if *password == "" {
			fmt.Fprintf(stdout, "password: %s\n", pw)
		}
		return nil
	case "account list":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DID\tHANDLE\tEMAIL\tCREATED\tSTATUS")
		cursor := ""
		for {
			var page struct {
				Cursor   string        `json:"cursor"`
				Accounts []accountView `json:"accounts"`
			}
			params := url.Values{"limit": {"100"}}
			if cursor != "" {
				params.Set("cursor", cursor)
			}
			if err := c.call(ctx, "GET", "com.atproto.admin.searchAccounts", params, nil, &page); err != nil {
				return err
			}
			for _, a := range page.Accounts {
				status := "active"
				if a.DeactivatedAt != "" {
					status = "deactivated"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.DID, a.Handle, a.Email, a.IndexedAt, status)
			}
			if page.Cursor == "" {
				return tw.Flush()
			}
			cursor = page.Cursor
		}
	case "account deactivate", "account activate":
		did, err := arg()
		if err != nil {
			return err
		}
		body := map[string]any{"subject": map[string]string{"$type": "com.atproto.admin.defs#repoRef", "did": did},
			"deactivated": map[string]bool{"applied": sub == "deactivate"}}
		if err := c.call(ctx, "POST", "com.atproto.admin.updateSubjectStatus", nil, body, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%sd %s\n", sub, did)
		return nil
	case "account delete":
		did, err := arg()
		if err != nil {
			return err
		}
		if err := c.call(ctx, "POST", "com.atproto.admin.deleteAccount", nil, map[string]string{"did": did}, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted %s\n", did)
		return nil
	case "account reset-password":
		did, err := arg()
		if err != nil {
			return err
		}
		pw := *password
		if pw == "" {
			pw = randomPassword()
		}
		if err := c.call(ctx, "POST", "com.atproto.admin.updateAccountPassword", nil, map[string]string{"did": did, "password": pw}, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password of %s reset; its sessions are signed out\n", did)
		if *password == "" {
			fmt.Fprintf(stdout, "password: %s\n", pw)
		}
		return nil
	case "account usage":
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DID\tBLOBS\tBYTES")
		cursor := ""
		for {
			var page struct {
				Cursor   string `json:"cursor"`
				Accounts []struct {
					DID   string `json:"did"`
					Bytes int64  `json:"bytes"`
					Count int64  `json:"count"`
				} `json:"accounts"`
			}
			params := url.Values{"limit": {"1000"}}
			if cursor != "" {
				params.Set("cursor", cursor)
			}
			if err := c.call(ctx, "GET", "social.aerie.admin.listBlobUsage", params, nil, &page); err != nil {
				return err
			}
			for _, a := range page.Accounts {
				fmt.Fprintf(tw, "%s\t%d\t%d\n", a.DID, a.Count, a.Bytes)
			}
			if page.Cursor == "" {
				return tw.Flush()
			}
			cursor = page.Cursor
		}
	case "blobs gc":
		var out struct {
			Report struct {
				Expired       int `json:"expired"`
				Adopted       int `json:"adopted"`
				StaleTemp     int `json:"staleTemp"`
				RemoteExpired int `json:"remoteExpired"`
			} `json:"report"`
			FreedBytes int64 `json:"freedBytes"`
		}
		if err := c.call(ctx, "POST", "social.aerie.admin.runBlobGC", nil, map[string]string{}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "freed %d bytes: %d expired uploads, %d expired remote blobs, %d interrupted temp files; %d uploads adopted by records\n",
			out.FreedBytes, out.Report.Expired, out.Report.RemoteExpired, out.Report.StaleTemp, out.Report.Adopted)
		return nil
	case "reindex ":
		// The node streams a line per account; copy them as they come, as the progress display.
		req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/xrpc/social.aerie.admin.reindex", strings.NewReader("{}"))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("admin", c.password)
		resp, err := (&http.Client{}).Do(req) // no timeout: a large node takes long
		if err != nil {
			return fmt.Errorf("reach the node at %s (is `aerie serve` running?): %w", c.base, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("reindex: %s", b)
		}
		_, err = io.Copy(stdout, resp.Body)
		return err
	case "backfill ":
		if len(positional) != 1 {
			return usagef("backfill: want one ACCOUNT (a handle or DID)")
		}
		var out struct {
			DID     string `json:"did"`
			Records int    `json:"records"`
			Rev     string `json:"rev"`
		}
		fmt.Fprintf(stdout, "fetching the repo of %s...\n", positional[0])
		c.hc.Timeout = 0 // a large repo takes long; the node bounds the download
		if err := c.call(ctx, "POST", "social.aerie.admin.backfill", nil, map[string]string{"account": positional[0]}, &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backfilled %s: %d records at rev %s; following it from now on\n", out.DID, out.Records, out.Rev)
		return nil
	case "invite create":
		body := map[string]any{"useCount": *uses}
		if *forDID != "" {
			body["forAccount"] = *forDID
		}
		var out struct{ Code string }
		if err := c.call(ctx, "POST", "com.atproto.server.createInviteCode", nil, body, &out); err != nil {
			return err
		}
		fmt.Fprintln(stdout, out.Code)
		return nil
	}
	return usagef("unknown command %q; run 'aerie %s --help'", strings.TrimSpace(group+" "+sub), group)
}
