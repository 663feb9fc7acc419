package consul

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/ring"
)

// ErrIDInUse is returned by Register when another live process holds the
// gateway ID.
var ErrIDInUse = errors.New("gateway ID is held by another live instance")

// RegisterConfig describes a gateway's registration.
type RegisterConfig struct {
	// Client talks to the gateway's local Consul agent. Required.
	Client *api.Client
	// ID is the gateway ID, also the Consul service and check ID. Required.
	ID string
	// Service is the Consul service name. If empty, defaults to Service.
	Service string
	// Address and Port are those of the socket listener.
	Address string
	Port    int
	// URL is the public WebSocket URL clients use (meta ws_url). Required.
	URL string
	// Weight is the ring weight, 1..16. If zero, defaults to 1.
	Weight int
	// Version is recorded in meta for operators.
	Version string
	// Instance is this process's nonce, the one its liveness responder
	// answers with. If empty, a random one is made; read it back with
	// Registration.Instance.
	Instance string
	// TTL of the check; the heartbeat runs every TTL/3. If zero, defaults
	// to 6s.
	TTL time.Duration
	// DeregisterAfter is how long Consul keeps the service once its check is
	// critical. If zero, defaults to 1m (Consul's minimum).
	DeregisterAfter time.Duration
	// Health gates the heartbeat: the check passes only while it returns nil,
	// and the first registration is passing only if it does. If nil, the
	// gateway is always healthy.
	Health func() error
	// Probe checks whether another process answers for ID. Required.
	Probe Probe
	// Logger; if nil, slog.Default().
	Logger *slog.Logger
}

// Registration is a gateway's live registration: it heartbeats until Close.
type Registration struct {
	cfg    RegisterConfig
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	kick   chan struct{} // one slot: a Check waiting for the heartbeat loop
	closed sync.Once

	downSince    atomic.Int64 // unix nanos of the first failed contact in a row; 0 when reachable
	reregistered atomic.Int64 // times the agent had forgotten us
}

// Register claims cfg.ID, registers the gateway with its local agent and
// starts the heartbeat. It fails if the configuration is invalid, if another
// live instance holds the ID (ErrIDInUse), or if the agent cannot be reached.
// An ID whose holder is dead is taken over at once.
func Register(ctx context.Context, cfg RegisterConfig) (*Registration, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	r := &Registration{
		cfg:  cfg,
		log:  cfg.Logger.With("gateway", cfg.ID),
		stop: make(chan struct{}),
		done: make(chan struct{}),
		kick: make(chan struct{}, 1),
	}
	if err := r.claim(ctx); err != nil {
		return nil, err
	}
	status, output := r.status()
	if err := r.register(ctx, status, output); err != nil {
		return nil, fmt.Errorf("register %s in consul: %w", cfg.ID, err)
	}
	go r.heartbeat()
	return r, nil
}

func (c *RegisterConfig) fill() error {
	if c.Client == nil {
		return errors.New("register: no consul client")
	}
	if c.Probe == nil {
		return errors.New("register: no liveness probe")
	}
	if err := ring.ValidateID(c.ID); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	c.Weight = cmp.Or(c.Weight, 1)
	c.Service = cmp.Or(c.Service, Service)
	if err := ring.ValidateWeight(c.Weight); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if err := ValidateURL(c.URL); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("register: invalid port %d", c.Port)
	}
	if c.Instance == "" {
		b := make([]byte, 8)
		rand.Read(b)
		c.Instance = hex.EncodeToString(b)
	}
	c.TTL = cmp.Or(c.TTL, 6*time.Second)
	if c.TTL < 300*time.Millisecond {
		return fmt.Errorf("register: TTL %v is too short", c.TTL)
	}
	c.DeregisterAfter = cmp.Or(c.DeregisterAfter, time.Minute)
	if c.Health == nil {
		c.Health = func() error { return nil }
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// claim refuses the ID when another live process holds it. A dead holder's
// entry is simply replaced: the ID is ours.
func (r *Registration) claim(ctx context.Context) error {
	// A probe that cannot tell is asked again for a while, but only when
	// Consul shows another instance passing under the ID: right after this
	// process connected, NATSProbe does not believe "no responders" for
	// MinUptime, and a gateway restarted at once after a crash would
	// otherwise find its own dead predecessor still passing and give up its
	// ID.
	deadline := time.Now().Add(claimPatience)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		l := r.cfg.Probe(pctx, r.cfg.ID)
		cancel()
		switch {
		case l.State == Alive && l.Instance != r.cfg.Instance:
			return fmt.Errorf("register %s: %w (instance %s answers for it)", r.cfg.ID, ErrIDInUse, l.Instance)
		case l.State == Alive, l.State == Dead:
			return nil
		}
		// The probe could not tell (nor whether a silent holder is frozen
		// or gone). Refuse only if Consul shows another instance holding
		// the ID and passing: we cannot prove it dead.
		holder, err := r.passingHolder(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("register %s: liveness unknown and consul unreachable: %w", r.cfg.ID, err)
		case holder == "":
			return nil
		case time.Now().After(deadline) || !sleepCtx(ctx, 250*time.Millisecond):
			return fmt.Errorf("register %s: %w (instance %s passes in consul and the liveness probe cannot tell)",
				r.cfg.ID, ErrIDInUse, holder)
		}
	}
}

// passingHolder is the instance of another process that Consul shows
// passing under the ID; empty if none.
func (r *Registration) passingHolder(ctx context.Context) (string, error) {
	entries, _, err := r.cfg.Client.Health().Service(r.cfg.Service, "", true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Service.ID == r.cfg.ID && e.Service.Meta[MetaInstance] != r.cfg.Instance {
			return e.Service.Meta[MetaInstance], nil
		}
	}
	return "", nil
}

// claimPatience is how long claim asks a probe that cannot tell again.
const claimPatience = MinUptime + 2*time.Second

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Instance returns the registration's instance nonce.
func (r *Registration) Instance() string { return r.cfg.Instance }

// Unreachable reports how long the agent has been unreachable without a
// break, or zero when the last attempt reached it. It is for operators
// (readiness, metrics): an unreachable agent alone drops nobody from the
// others' rings, so it is no reason to fence.
func (r *Registration) Unreachable() time.Duration {
	since := r.downSince.Load()
	if since == 0 {
		return 0
	}
	return time.Since(time.Unix(0, since))
}

// Check runs a heartbeat now, with the gateway's current health, instead of
// at the next TTL/3 tick: the gateway calls it when its NATS connection
// drops or returns, so that watchers see it critical (or passing again) at
// once rather than up to TTL/3 later. It never blocks. Calls made while a
// beat runs are coalesced into one more beat; after Close it does nothing.
func (r *Registration) Check() {
	select {
	case r.kick <- struct{}{}:
	default: // a beat is already due
	}
}

// Reregistered returns how many times the agent had forgotten the service and
// it was registered again.
func (r *Registration) Reregistered() int64 { return r.reregistered.Load() }

// Close stops the heartbeat and deregisters the service, so watchers see it
// gone at once rather than after the TTL. It is safe to call more than once.
func (r *Registration) Close() error {
	var err error
	r.closed.Do(func() {
		close(r.stop)
		<-r.done
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = r.cfg.Client.Agent().ServiceDeregisterOpts(r.cfg.ID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			err = fmt.Errorf("deregister %s: %w", r.cfg.ID, err)
		}
	})
	return err
}

// status is the check status and output the gateway's health calls for.
func (r *Registration) status() (string, string) {
	if err := r.cfg.Health(); err != nil {
		return api.HealthCritical, "unhealthy: " + err.Error()
	}
	return api.HealthPassing, "ok"
}

func (r *Registration) register(ctx context.Context, status, output string) error {
	reg := &api.AgentServiceRegistration{
		ID:      r.cfg.ID,
		Name:    r.cfg.Service,
		Address: r.cfg.Address,
		Port:    r.cfg.Port,
		Meta: map[string]string{
			MetaURL:      r.cfg.URL,
			MetaWeight:   strconv.Itoa(r.cfg.Weight),
			MetaVersion:  r.cfg.Version,
			MetaInstance: r.cfg.Instance,
		},
		Check: &api.AgentServiceCheck{
			CheckID:                        r.cfg.ID,
			Name:                           "herald gateway heartbeat",
			TTL:                            r.cfg.TTL.String(),
			Status:                         status,
			Notes:                          output,
			DeregisterCriticalServiceAfter: r.cfg.DeregisterAfter.String(),
		},
	}
	err := r.cfg.Client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx))
	r.contact(err)
	return err
}

// contact records whether the agent answered.
func (r *Registration) contact(err error) {
	var se api.StatusError
	if err == nil || errors.As(err, &se) {
		r.downSince.Store(0)
		return
	}
	r.downSince.CompareAndSwap(0, time.Now().UnixNano())
}

func (r *Registration) heartbeat() {
	defer close(r.done)
	t := time.NewTicker(r.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.beat()
		case <-r.kick:
			r.beat()
			t.Reset(r.cfg.TTL / 3)
		}
	}
}

// beat updates the TTL check once, registering again if the agent no longer
// knows the check (a restarted dev agent forgets everything).
func (r *Registration) beat() {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TTL/3)
	defer cancel()
	status, output := r.status()
	err := r.cfg.Client.Agent().UpdateTTLOpts(r.cfg.ID, output, status, (&api.QueryOptions{}).WithContext(ctx))
	r.contact(err)
	var se api.StatusError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		r.log.Warn("consul agent forgot the gateway; registering again", "error", err)
		if err := r.register(ctx, status, output); err != nil {
			r.log.Error("register again", "error", err)
			return
		}
		r.reregistered.Add(1)
	default:
		r.log.Warn("heartbeat failed", "error", err, "unreachable_for", r.Unreachable().Round(time.Millisecond))
	}
}
