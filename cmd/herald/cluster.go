package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/heraldpush/herald/gateway/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// herald cluster sets up what a production cluster runs on (deploy/compose
// uses it): `init` writes the secrets and configurations — a CA and TLS
// certificates for the NATS nodes, an nkey per component, the NATS nodes'
// configuration with each component's least permissions, Consul's gossip
// key and ACL settings, herald's token secret and API key — and
// `consul-bootstrap` turns Consul's ACLs on for real: it bootstraps them,
// gives every component and agent a token with only what it needs, and
// keeps the management token nowhere.
func runCluster(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: herald cluster init|consul-bootstrap [flags]")
	}
	switch args[0] {
	case "init":
		return runClusterInit(args[1:])
	case "consul-bootstrap":
		return runConsulBootstrap(ctx, args[1:])
	default:
		return fmt.Errorf("herald cluster: unknown subcommand %q (init, consul-bootstrap)", args[0])
	}
}

// clusterShape is the names of a cluster's processes.
type clusterShape struct {
	dir                      string
	deployment               wire.Deployment
	natsNodes, consulServers int
	gateways, dispatchers    int
	natsCluster              string
}

func (c *clusterShape) register(fs *flagSet) {
	fs.StringVar(&c.dir, "dir", "", "the directory of the cluster's secrets and configurations (required)")
	fs.IntVar(&c.natsNodes, "nats", 3, "NATS nodes, named nats-1…")
	fs.IntVar(&c.consulServers, "consul", 3, "Consul servers, named consul-1…")
	fs.IntVar(&c.gateways, "gateways", 3, "gateways, named gw-1…; each has a Consul client agent agent-gw-1…")
	fs.IntVar(&c.dispatchers, "dispatchers", 2, "dispatchers, named disp-1…; each has a Consul client agent agent-disp-1…")
	fs.StringVar(&c.natsCluster, "nats-cluster", "herald", "the NATS cluster's name")
}

func (c *clusterShape) names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i+1)
	}
	return out
}

func (c *clusterShape) check(deployment string) error {
	c.deployment = wire.Deployment(deployment)
	switch {
	case c.dir == "":
		return errors.New("--dir is required")
	case c.natsNodes < 1 || c.consulServers < 1 || c.gateways < 1 || c.dispatchers < 1:
		return errors.New("every count must be at least 1")
	}
	return c.deployment.Validate()
}

// Names of the files in the cluster directory.
const (
	clusterDone     = ".initialized"
	consulBootstrap = ".consul-bootstrapped"
)

func runClusterInit(args []string) error {
	fs := newFlagSet("cluster init", "Write a cluster's secrets and configurations into --dir, unless it holds them already.")
	var shape clusterShape
	shape.register(fs)
	deployment := fs.String("deployment", "", "the deployment name the cluster's subjects, stream and service are scoped by")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := shape.check(*deployment); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(shape.dir, clusterDone)); err == nil {
		fmt.Println("herald cluster init:", shape.dir, "is initialized already")
		return nil
	}
	if err := os.MkdirAll(filepath.Join(shape.dir, "tokens"), 0o700); err != nil {
		return err
	}
	w := &secretWriter{dir: shape.dir}
	caCert, caKey, err := newCA()
	if err != nil {
		return err
	}
	w.file("ca.pem", pemCert(caCert.Raw), 0o644)
	nats := shape.names("nats-", shape.natsNodes)
	for _, n := range nats {
		cert, key, err := newLeaf(caCert, caKey, n, "localhost")
		if err != nil {
			return err
		}
		w.file(n+".pem", pemCert(cert), 0o600)
		w.file(n+".key", key, 0o600)
	}
	users := []*server.NkeyUser{}
	stream := shape.deployment.Stream()
	for _, gw := range shape.names("gw-", shape.gateways) {
		pub := w.nkey(gw + ".nk")
		users = append(users, &server.NkeyUser{Nkey: pub, Permissions: natsPermissions(shape.deployment, stream, gw)})
	}
	for _, d := range shape.names("disp-", shape.dispatchers) {
		pub := w.nkey(d + ".nk")
		users = append(users, &server.NkeyUser{Nkey: pub, Permissions: natsPermissions(shape.deployment, stream, "")})
	}
	for _, n := range nats {
		conf, err := natsConfig(n, shape.natsCluster, nats, users)
		if err != nil {
			return err
		}
		w.file(n+".conf", conf, 0o600)
	}
	gossip := make([]byte, 32)
	rand.Read(gossip)
	w.json("consul-server.json", map[string]any{
		"encrypt": base64.StdEncoding.EncodeToString(gossip),
		"acl":     map[string]any{"enabled": true, "default_policy": "deny", "enable_token_persistence": true},
	})
	w.file("consul-gossip.key", []byte(base64.StdEncoding.EncodeToString(gossip)), 0o600)
	w.file("token-secret", []byte(randomHex(32)), 0o600)
	w.file("api-key", []byte(randomHex(24)), 0o600)
	if w.err != nil {
		return w.err
	}
	if err := os.WriteFile(filepath.Join(shape.dir, clusterDone), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("herald cluster init: wrote the secrets and configurations of %d NATS nodes, %d Consul servers, %d gateways and %d dispatchers into %s\n",
		shape.natsNodes, shape.consulServers, shape.gateways, shape.dispatchers, shape.dir)
	return nil
}

// natsConfig is a NATS node's configuration, as JSON (a subset of the NATS
// configuration syntax): TLS for clients and routes, the cluster's routes,
// JetStream, the pings herald counts on, a lame-duck period for rolling
// restarts, and every component's nkey with its permissions.
func natsConfig(name, cluster string, nodes []string, users []*server.NkeyUser) ([]byte, error) {
	type perm struct {
		Allow []string `json:"allow,omitempty"`
	}
	type perms struct {
		Publish        perm `json:"publish"`
		Subscribe      perm `json:"subscribe"`
		AllowResponses bool `json:"allow_responses,omitempty"`
	}
	type user struct {
		Nkey        string `json:"nkey"`
		Permissions perms  `json:"permissions"`
	}
	var us []user
	for _, u := range users {
		us = append(us, user{Nkey: u.Nkey, Permissions: perms{
			Publish: perm{u.Permissions.Publish.Allow}, Subscribe: perm{u.Permissions.Subscribe.Allow},
			AllowResponses: u.Permissions.Response != nil,
		}})
	}
	var routes []string
	for _, n := range nodes {
		routes = append(routes, "nats://"+n+":6222")
	}
	tls := map[string]any{"cert_file": "/secrets/" + name + ".pem", "key_file": "/secrets/" + name + ".key", "ca_file": "/secrets/ca.pem", "timeout": 2}
	// NATS's parser takes JSON but not its \u escapes: no HTML escaping
	// of the subjects' ">".
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(map[string]any{
		"server_name":            name,
		"listen":                 "0.0.0.0:4222",
		"http":                   "0.0.0.0:8222",
		"ping_interval":          natsPingInterval.String(),
		"ping_max":               natsMaxPingsOut,
		"lame_duck_duration":     "30s", // nats-server refuses less
		"lame_duck_grace_period": "2s",
		"jetstream":              map[string]any{"store_dir": "/data"},
		"tls":                    tls,
		"cluster": map[string]any{
			"name": cluster, "listen": "0.0.0.0:6222", "routes": routes, "tls": tls,
			// Clients are given every node's name: gossiped addresses
			// are IPs, which the nodes' certificates do not name.
			"no_advertise": true,
		},
		"authorization": map[string]any{"users": us},
	})
	return buf.Bytes(), err
}

// secretWriter writes the cluster's files, keeping the first error.
type secretWriter struct {
	dir string
	err error
}

func (w *secretWriter) file(name string, b []byte, mode os.FileMode) {
	if w.err == nil {
		w.err = os.WriteFile(filepath.Join(w.dir, name), b, mode)
	}
}

func (w *secretWriter) json(name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		w.err = err
		return
	}
	w.file(name, b, 0o600)
}

// nkey writes a new user nkey's seed and returns its public key.
func (w *secretWriter) nkey(name string) string {
	kp, err := nkeys.CreateUser()
	if err != nil {
		w.err = err
		return ""
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	w.file(name, seed, 0o600)
	return pub
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "herald cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// newLeaf signs a certificate for names, usable by a server and, for
// cluster routes, as a client; it returns the DER certificate and the PEM
// key.
func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names ...string) ([]byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(2, 0, 0), DNSNames: names,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return der, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func runConsulBootstrap(ctx context.Context, args []string) error {
	fs := newFlagSet("cluster consul-bootstrap", "Bootstrap Consul's ACLs and give each server, agent, gateway and dispatcher a token with only what it needs; the management token is kept nowhere.")
	var shape clusterShape
	shape.register(fs)
	deployment := fs.String("deployment", "", "the deployment name the gateways' service is scoped by")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := shape.check(*deployment); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(shape.dir, consulBootstrap)); err == nil {
		fmt.Println("herald cluster consul-bootstrap: done already")
		return nil
	}
	servers := shape.names("consul-", shape.consulServers)
	first := consulClient(servers[0]+":8500", "")
	var mgmt *api.ACLToken
	deadline := time.Now().Add(2 * time.Minute)
	for {
		leader, err := first.Status().Leader()
		if err == nil && leader != "" {
			if mgmt, _, err = first.ACL().Bootstrap(); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bootstrapping Consul's ACLs on %s: %v", servers[0], err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	admin := consulClient(servers[0]+":8500", mgmt.SecretID)
	service := shape.deployment.Service()
	// The servers' own agents: their node registration and anti-entropy.
	for _, s := range servers {
		tok, err := consulToken(admin, "herald-agent-"+s, "Consul server "+s+"'s agent", agentRules(s))
		if err != nil {
			return err
		}
		if _, err := consulClient(s+":8500", mgmt.SecretID).Agent().UpdateAgentACLToken(tok, nil); err != nil {
			return fmt.Errorf("setting %s's agent token: %w", s, err)
		}
	}
	gossip, err := os.ReadFile(filepath.Join(shape.dir, "consul-gossip.key"))
	if err != nil {
		return err
	}
	w := &secretWriter{dir: shape.dir}
	agentConfig := func(node string) error {
		tok, err := consulToken(admin, "herald-agent-"+node, "Consul client agent "+node, agentRules(node))
		if err != nil {
			return err
		}
		w.json("consul-"+node+".json", map[string]any{
			"encrypt": strings.TrimSpace(string(gossip)),
			"acl": map[string]any{"enabled": true, "default_policy": "deny", "enable_token_persistence": true,
				"tokens": map[string]any{"agent": tok}},
		})
		return nil
	}
	for _, gw := range shape.names("gw-", shape.gateways) {
		tok, err := consulToken(admin, "herald-gateway-"+gw, "herald gateway "+gw, gatewayRules(service))
		if err != nil {
			return err
		}
		w.file(filepath.Join("tokens", gw+".token"), []byte(tok), 0o600)
		if err := agentConfig("agent-" + gw); err != nil {
			return err
		}
	}
	for _, d := range shape.names("disp-", shape.dispatchers) {
		tok, err := consulToken(admin, "herald-dispatcher-"+d, "herald dispatcher "+d, dispatcherRules(service))
		if err != nil {
			return err
		}
		w.file(filepath.Join("tokens", d+".token"), []byte(tok), 0o600)
		if err := agentConfig("agent-" + d); err != nil {
			return err
		}
	}
	w.file(consulBootstrap, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
	if w.err != nil {
		return w.err
	}
	fmt.Printf("herald cluster consul-bootstrap: ACLs bootstrapped; tokens for %d servers, %d gateways, %d dispatchers and their agents; the management token (accessor %s) is kept nowhere\n",
		len(servers), shape.gateways, shape.dispatchers, mgmt.AccessorID)
	return nil
}

func consulClient(addr, token string) *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = addr, token, ""
	c, _ := api.NewClient(cfg)
	return c
}
