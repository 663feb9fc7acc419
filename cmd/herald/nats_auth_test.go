package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// TestNATSConnectionSettings: herald reaches a NATS server that requires
// TLS and an nkey with --nats-tls-ca and --nats-nkey, and is refused
// without them or with another key.
func TestNATSConnectionSettings(t *testing.T) {
	dir := t.TempDir()
	caFile, serverTLS := testCA(t, dir)
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	os.WriteFile(seedFile, seed, 0o600)
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	otherFile := filepath.Join(dir, "other.nk")
	os.WriteFile(otherFile, otherSeed, 0o600)

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		TLS: true, TLSConfig: serverTLS, Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(ns.Shutdown)
	url := "tls://" + ns.Addr().String()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	try := func(f natsFlags) error {
		c := common{natsURL: url, nats: f}
		// One attempt: herald's own connections retry forever.
		nc, err := c.connectNATS("test", log, nats.RetryOnFailedConnect(false), nats.Timeout(2*time.Second))
		if err == nil {
			nc.Close()
		}
		return err
	}
	if err := try(natsFlags{tlsCA: caFile, nkey: seedFile}); err != nil {
		t.Fatalf("with the CA and the nkey: %v", err)
	}
	for name, f := range map[string]natsFlags{
		"no nkey":      {tlsCA: caFile},
		"another nkey": {tlsCA: caFile, nkey: otherFile},
		"no CA":        {nkey: seedFile},
	} {
		if err := try(f); err == nil {
			t.Errorf("%s: connected, want refused", name)
		}
	}
	for name, f := range map[string]natsFlags{
		"creds and nkey":   {creds: "x", nkey: seedFile},
		"cert without key": {tlsCert: "x"},
		"negative pings":   {pingsOut: -1},
	} {
		if _, err := f.options(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// testCA writes a CA certificate to dir and returns its path and a server
// TLS configuration for 127.0.0.1 signed by it.
func testCA(t *testing.T, dir string) (string, *tls.Config) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return caFile, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}
