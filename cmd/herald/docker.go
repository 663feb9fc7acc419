package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// dockerClient is the little of Docker's Engine API (v1.41, the engine
// here) that herald chaos --compose drives faults with: list a Compose
// project's containers, kill, stop, start, pause and unpause them, and cut
// them off a network and back. It talks to the engine's unix socket, so the
// chaos driver needs no docker CLI in its FROM-scratch image.
type dockerClient struct {
	http *http.Client
}

func newDockerClient(socket string) *dockerClient {
	return &dockerClient{http: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
		// A stop waits for the container's own grace period (45 s at most
		// in deploy/compose).
		Timeout: 2 * time.Minute,
	}}
}

// dockerContainer is one container of the project, as inspected.
type dockerContainer struct {
	ID     string
	Name   string
	Config struct {
		Labels map[string]string
	}
	State struct {
		Status  string // running, exited, paused, …
		Running bool
		Paused  bool
		Health  *struct{ Status string }
	}
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string
			Aliases   []string
		}
	}
}

func (d *dockerClient) do(ctx context.Context, method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://docker/v1.41"+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	// 304: the container is in that state already (started, stopped).
	if resp.StatusCode >= 300 && resp.StatusCode != http.StatusNotModified {
		return fmt.Errorf("docker %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil && resp.StatusCode != http.StatusNotModified {
		return json.Unmarshal(b, out)
	}
	return nil
}

// inspect reads a container by ID or name (a prefix of the ID will do).
func (d *dockerClient) inspect(ctx context.Context, id string) (*dockerContainer, error) {
	var c dockerContainer
	if err := d.do(ctx, http.MethodGet, "/containers/"+url.PathEscape(id)+"/json", nil, &c); err != nil {
		return nil, err
	}
	c.Name = strings.TrimPrefix(c.Name, "/")
	return &c, nil
}

// service inspects the container of a Compose project's service. One-off
// containers (`docker-compose run`) are left out.
func (d *dockerClient) service(ctx context.Context, project, service string) (*dockerContainer, error) {
	filters, _ := json.Marshal(map[string][]string{"label": {
		"com.docker.compose.project=" + project, "com.docker.compose.service=" + service, "com.docker.compose.oneoff=False"}})
	var list []struct{ ID string }
	if err := d.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(filters)), nil, &list); err != nil {
		return nil, err
	}
	if len(list) != 1 {
		return nil, fmt.Errorf("the Compose project %q has %d containers of service %s, want 1", project, len(list), service)
	}
	return d.inspect(ctx, list[0].ID)
}

func (d *dockerClient) kill(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+id+"/kill?signal=KILL", nil, nil)
}

// stop sends the container's stop signal and waits for it to exit, killing
// it after its own stop timeout (Compose's stop_grace_period): a t in the
// request would replace that one.
func (d *dockerClient) stop(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+id+"/stop", nil, nil)
}

func (d *dockerClient) start(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil)
}

func (d *dockerClient) pause(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+id+"/pause", nil, nil)
}

func (d *dockerClient) unpause(ctx context.Context, id string) error {
	return d.do(ctx, http.MethodPost, "/containers/"+id+"/unpause", nil, nil)
}

// disconnect cuts the container off network, returning what reconnects it
// as it was: with its aliases, which are the names (the Compose service's)
// other containers resolve it by.
func (d *dockerClient) disconnect(ctx context.Context, network, id string) (reconnect func(context.Context) error, err error) {
	c, err := d.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	ep, ok := c.NetworkSettings.Networks[network]
	if !ok {
		return nil, fmt.Errorf("%s is not on network %s", c.Name, network)
	}
	if err := d.do(ctx, http.MethodPost, "/networks/"+network+"/disconnect", map[string]any{"Container": id, "Force": true}, nil); err != nil {
		return nil, err
	}
	var aliases []string
	for _, a := range ep.Aliases {
		if !strings.HasPrefix(c.ID, a) { // the ID's prefix is added again by the engine
			aliases = append(aliases, a)
		}
	}
	return func(ctx context.Context) error {
		return d.do(ctx, http.MethodPost, "/networks/"+network+"/connect",
			map[string]any{"Container": id, "EndpointConfig": map[string]any{"Aliases": aliases}}, nil)
	}, nil
}
