package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Response size limits for PLC answers. An audit log of a long-lived DID runs to tens of
// kilobytes; a megabyte leaves room without letting a hostile directory fill memory.
const (
	maxPLCResponse   = 1 << 20
	maxPLCErrorBody  = 4 << 10
	userAgent        = "aerie"
	contentTypeJSON  = "application/json"
	maxErrorMsgRunes = 300
)

// ErrOperationRejected is returned by PLCClient.Submit when the directory answers 4xx; the
// error text carries the directory's message.
var ErrOperationRejected = errors.New("PLC directory rejected the operation")

// PLCClient talks to a PLC directory over HTTP: ours (plc.listen) or https://plc.directory.
// It is safe for concurrent use.
type PLCClient struct {
	baseURL string
	http    *http.Client
}

// NewPLCClient returns a client for the directory at baseURL (scheme, host, optional port;
// a trailing slash is dropped). hc should come from NewHTTPClient so that timeouts and
// the private-network policy apply.
func NewPLCClient(baseURL string, hc *http.Client) *PLCClient {
	return &PLCClient{baseURL: strings.TrimSuffix(baseURL, "/"), http: hc}
}

// URL returns the directory's base URL.
func (c *PLCClient) URL() string { return c.baseURL }

// Submit posts op for did. A 4xx answer is ErrOperationRejected with the directory's
// message.
func (c *PLCClient) Submit(ctx context.Context, did syntax.DID, op *Operation) error {
	body, err := json.Marshal(op)
	if err != nil {
		return fmt.Errorf("encode PLC operation: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+"/"+did.String(), bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("submit PLC operation for %s: %w", did, err)
	}
	req.Header.Set("Content-Type", contentTypeJSON)
	resp, err := c.do(req)
	if err != nil {
		return fmt.Errorf("submit PLC operation for %s: %w", did, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxPLCErrorBody))
	return nil
}

// LastOp returns did's latest operation (GET /<did>/log/last).
func (c *PLCClient) LastOp(ctx context.Context, did syntax.DID) (*Operation, error) {
	var op Operation
	if err := c.getJSON(ctx, did, "/log/last", &op); err != nil {
		return nil, err
	}
	return &op, nil
}

// AuditLog returns did's whole history, nullified operations included
// (GET /<did>/log/audit). Check it with VerifyAuditLog before trusting it.
func (c *PLCClient) AuditLog(ctx context.Context, did syntax.DID) ([]LogEntry, error) {
	var entries []LogEntry
	if err := c.getJSON(ctx, did, "/log/audit", &entries); err != nil {
		return nil, err
	}
	return entries, nil
}

// Data returns did's current state (GET /<did>/data); ErrTombstoned when it has none.
func (c *PLCClient) Data(ctx context.Context, did syntax.DID) (State, error) {
	var st State
	if err := c.getJSON(ctx, did, "/data", &st); err != nil {
		return State{}, err
	}
	return st, nil
}

// Document returns did's DID document as the directory serves it (GET /<did>).
func (c *PLCClient) Document(ctx context.Context, did syntax.DID) (json.RawMessage, error) {
	var doc json.RawMessage
	if err := c.getJSON(ctx, did, "", &doc); err != nil {
		return nil, err
	}
	return doc, nil
}

// getJSON fetches /<did><suffix> and decodes it into v. 404 is ErrDIDNotFound and 410
// ErrTombstoned.
func (c *PLCClient) getJSON(ctx context.Context, did syntax.DID, suffix string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL+"/"+did.String()+suffix, nil)
	if err != nil {
		return fmt.Errorf("fetch %s%s: %w", did, suffix, err)
	}
	resp, err := c.do(req)
	if err != nil {
		return fmt.Errorf("fetch %s%s: %w", did, suffix, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPLCResponse+1))
	if err != nil {
		return fmt.Errorf("fetch %s%s: read body: %w", did, suffix, err)
	}
	if len(b) > maxPLCResponse {
		return fmt.Errorf("fetch %s%s: response larger than %d bytes", did, suffix, maxPLCResponse)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("fetch %s%s: decode: %w", did, suffix, err)
	}
	return nil
}

// do sends req and turns non-2xx answers into errors; on success the caller closes the
// body.
func (c *PLCClient) do(req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", contentTypeJSON)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	msg := plcErrorMessage(resp.Body)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s", ErrDIDNotFound, msg)
	case resp.StatusCode == http.StatusGone:
		return nil, fmt.Errorf("%w: %s", ErrTombstoned, msg)
	case req.Method == http.MethodPost && resp.StatusCode >= 400 && resp.StatusCode < 500:
		return nil, fmt.Errorf("%w: %s", ErrOperationRejected, msg)
	}
	return nil, fmt.Errorf("PLC directory answered %d: %s", resp.StatusCode, msg)
}

// plcErrorMessage extracts {"message": ...} from an error body, shortened: it ends up in
// our logs and errors, and the directory may be hostile.
func plcErrorMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxPLCErrorBody))
	var body struct {
		Message string `json:"message"`
	}
	msg := string(b)
	if json.Unmarshal(b, &body) == nil && body.Message != "" {
		msg = body.Message
	}
	if rs := []rune(msg); len(rs) > maxErrorMsgRunes {
		msg = string(rs[:maxErrorMsgRunes]) + "…"
	}
	return strings.TrimSpace(msg)
}
