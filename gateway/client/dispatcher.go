package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxResponseBytes bounds what the client reads of a dispatcher's answer.
const maxResponseBytes = 64 << 10

// route is the dispatcher's answer to POST /v1/connect: where the user's
// socket goes, and the fingerprint of the ring that said so.
type route struct {
	Gateway string `json:"gateway"`
	URL     string `json:"url"`
	Ring    string `json:"ring"`
}

// resolve asks where the socket goes. A 401 gets one fresh token and one
// more try; a second 401 is ErrUnauthorized. Without a dispatcher the
// answer is always Config.URL.
//
// unreachable is the gateway the last socket could not reach ("" if none):
// the dispatcher then holds the answer until its ring names another owner,
// or that gateway answers its liveness probe, so a device whose gateway
// crashed lands on the new owner as soon as the ring converges.
func (r *run) resolve(ctx context.Context, unreachable string) (rt route, err error) {
	if r.c.cfg.Dispatcher == "" {
		return route{URL: r.c.cfg.URL}, nil
	}
	for refreshed := false; ; refreshed = true {
		rt, status, err := r.c.askDispatcher(ctx, r.token, unreachable)
		if status != http.StatusUnauthorized {
			return rt, err
		}
		if refreshed {
			r.c.log.Warn("dispatcher refused a fresh token; stopping", "err", err)
			return route{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
		r.c.log.Info("dispatcher refused the token; getting a new one", "err", err)
		if err := r.fetchToken(ctx); err != nil {
			return route{}, err
		}
	}
}

// askDispatcher makes one POST /v1/connect. It returns the HTTP status (0
// if there was no answer) so the caller can tell a 401 from the rest.
func (c *Client) askDispatcher(ctx context.Context, token, unreachable string) (route, int, error) {
	c.count(func(st *Stats) { st.Resolves++ })
	rt, status, err := c.postConnect(ctx, token, unreachable)
	if err != nil {
		c.count(func(st *Stats) { st.ResolveFailures++ })
	}
	return rt, status, err
}

func (c *Client) postConnect(ctx context.Context, token, unreachable string) (route, int, error) {
	u := c.cfg.Dispatcher + "/v1/connect"
	if unreachable != "" {
		u += "?unreachable=" + url.QueryEscape(unreachable)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return route{}, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return route{}, 0, fmt.Errorf("asking the dispatcher: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return route{}, resp.StatusCode, fmt.Errorf("reading the dispatcher's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(body, &e) // the status alone is enough; the body only adds detail
		return route{}, resp.StatusCode, fmt.Errorf("dispatcher answered %d %s: %s", resp.StatusCode, e.Error.Code, e.Error.Message)
	}
	var rt route
	if err := json.Unmarshal(body, &rt); err != nil {
		return route{}, resp.StatusCode, fmt.Errorf("dispatcher's answer: %w", err)
	}
	if rt.URL == "" {
		return route{}, resp.StatusCode, errors.New("dispatcher's answer has no url")
	}
	return rt, resp.StatusCode, nil
}
