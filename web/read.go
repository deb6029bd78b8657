package web

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/aerie-social/aerie/appview"
)

// query calls the AppView's method nsid in the process as viewer ("" for anonymous) and
// decodes its JSON answer into out. A 4xx answer is returned as *readError.
func (s *Server) query(ctx context.Context, viewer, nsid string, params url.Values, out any) error {
	return s.call(ctx, viewer, http.MethodGet, nsid, params, nil, out)
}

// readError is an error answer of an AppView method.
type readError struct {
	Status  int
	Name    string `json:"error"`
	Message string `json:"message"`
}

func (e *readError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Status, e.Name, e.Message)
}

func (s *Server) call(ctx context.Context, viewer, method, nsid string, params url.Values, body any, out any) error {
	h := s.methods[nsid]
	if h == nil {
		return fmt.Errorf("call %s: the AppView has no such method", nsid)
	}
	if viewer != "" {
		ctx = appview.WithViewer(ctx, syntax.DID(viewer))
	}
	var rd bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("call %s: %w", nsid, err)
		}
		rd.Reset(b)
	}
	u := "/xrpc/" + nsid
	if len(params) > 0 {
		u += "?" + params.Encode()
	}
	r, err := http.NewRequestWithContext(ctx, method, u, &rd)
	if err != nil {
		return fmt.Errorf("call %s: %w", nsid, err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := &recorder{header: http.Header{}, status: http.StatusOK}
	h(w, r)
	if w.status != http.StatusOK {
		e := &readError{Status: w.status}
		json.Unmarshal(w.body.Bytes(), e) // a body that is not an error leaves the status
		if w.status >= http.StatusInternalServerError {
			return fmt.Errorf("call %s: %w", nsid, e)
		}
		return e
	}
	if out == nil || w.body.Len() == 0 {
		return nil
	}
	if err := json.Unmarshal(w.body.Bytes(), out); err != nil {
		return fmt.Errorf("call %s: decode: %w", nsid, err)
	}
	return nil
}

// recorder is the http.ResponseWriter of an in-process call.
type recorder struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(status int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = status, true
	}
}

func (w *recorder) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}
