package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/wire"
)

// One generator process holds at most about 18,000 sockets here (20,000
// open files per process, hard), and fewer when its devices reconnect all
// at once: each then has a socket and a /v1/connect request open. So the
// devices of a big scenario are spread over several generator processes,
// each `herald bench worker` (the running binary), each dialing from
// source addresses of its own. A worker connects its share of the users
// and reports back, one JSON line per event on its stdout; the scenario
// runs in the parent as if the devices were its own.

// WorkerSpec is what one generator process connects.
type WorkerSpec struct {
	System string `json:"system"` // herald or centrifugo
	// herald
	Dispatchers []string `json:"dispatchers,omitempty"`
	APIKey      string   `json:"api_key,omitempty"`
	TokenSecret string   `json:"token_secret,omitempty"`
	// centrifugo
	URL    string `json:"url,omitempty"`
	Secret string `json:"secret,omitempty"`

	Users []string `json:"users"`
	// Sources are the addresses it dials from, in turn.
	Sources []string `json:"sources"`
}

// workerLine is one event a worker reports.
type workerLine struct {
	User   string            `json:"u,omitempty"`
	Kind   string            `json:"k"` // frame, status, data, ready, error
	Frame  *wire.ServerFrame `json:"f,omitempty"`
	Status *workerStatus     `json:"s,omitempty"`
	Data   json.RawMessage   `json:"d,omitempty"`
	Err    string            `json:"e,omitempty"`
}

type workerStatus struct {
	Connected bool          `json:"connected"`
	Gateway   string        `json:"gateway,omitempty"`
	CloseCode int           `json:"close_code,omitempty"`
	Err       string        `json:"err,omitempty"`
	Backoff   time.Duration `json:"backoff,omitempty"`
}

// RunWorker is `herald bench worker`: it reads a WorkerSpec from in,
// connects its devices, reports on out, and keeps them until ctx ends.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	var spec WorkerSpec
	if err := json.NewDecoder(in).Decode(&spec); err != nil {
		return fmt.Errorf("bench worker: reading its spec: %w", err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(out)
	emit := func(l workerLine) {
		b, _ := json.Marshal(l)
		mu.Lock()
		defer mu.Unlock()
		w.Write(append(b, '\n'))
		w.Flush()
	}
	clients := make([]*http.Client, len(spec.Sources))
	for i, s := range spec.Sources {
		clients[i] = sourceClient(net.ParseIP(s))
	}
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	var err error
	switch spec.System {
	case "herald":
		t := &Target{Dispatchers: spec.Dispatchers, APIKey: spec.APIKey, TokenSecret: spec.TokenSecret, Clients: clients}
		err = t.devices(ctx, cctx, spec.Users, func(user string, f wire.ServerFrame) {
			emit(workerLine{User: user, Kind: "frame", Frame: &f})
		}, func(user string, s client.Status) {
			ws := &workerStatus{Connected: s.Connected, Gateway: s.Gateway, CloseCode: s.CloseCode, Backoff: s.Backoff}
			if s.Err != nil {
				ws.Err = s.Err.Error()
			}
			emit(workerLine{User: user, Kind: "status", Status: ws})
		})
	case "centrifugo":
		c := &Centrifugo{URL: spec.URL, Secret: spec.Secret, Clients: clients}
		err = c.Connect(ctx, cctx, spec.Users, func(user string, data []byte) {
			emit(workerLine{User: user, Kind: "data", Data: data})
		})
	default:
		err = fmt.Errorf("bench worker: unknown system %q", spec.System)
	}
	if err != nil {
		emit(workerLine{Kind: "error", Err: err.Error()})
		return err
	}
	emit(workerLine{Kind: "ready"})
	<-ctx.Done()
	return nil
}

// Generators spreads devices over N worker processes, each dialing from
// Sources source addresses of its own (127.0.0.2…).
type Generators struct {
	N       int
	Sources int
}

// run starts a worker per share of users (spec filled in by base), passes
// every line to handle, and returns once every worker has its devices
// ready. The workers live until cctx ends.
func (g Generators) run(ctx, cctx context.Context, base WorkerSpec, users []string, handle func(workerLine)) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	ready := make(chan error, g.N)
	for i := range g.N {
		spec := base
		spec.Users = nil
		for j := i; j < len(users); j += g.N {
			spec.Users = append(spec.Users, users[j])
		}
		for k := range g.Sources {
			spec.Sources = append(spec.Sources, sourceIP(i*g.Sources+k).String())
		}
		b, _ := json.Marshal(spec)
		cmd := exec.CommandContext(cctx, exe, "bench", "worker")
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stdin = bytes.NewReader(b)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting generator %d: %w", i, err)
		}
		go func() {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 4<<20)
			said := false
			for sc.Scan() {
				var l workerLine
				if json.Unmarshal(sc.Bytes(), &l) != nil {
					continue
				}
				switch l.Kind {
				case "ready":
					said = true
					ready <- nil
				case "error":
					said = true
					ready <- fmt.Errorf("generator %d: %s", i, l.Err)
				default:
					handle(l)
				}
			}
			cmd.Wait()
			if !said {
				ready <- fmt.Errorf("generator %d exited before its devices were ready", i)
			}
		}()
	}
	var errs []error
	for range g.N {
		select {
		case err := <-ready:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// status turns a worker's status line back into the client's.
func (s *workerStatus) status() client.Status {
	st := client.Status{Connected: s.Connected, Gateway: s.Gateway, CloseCode: s.CloseCode, Backoff: s.Backoff}
	if s.Err != "" {
		st.Err = errors.New(s.Err)
	}
	return st
}
