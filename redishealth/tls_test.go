package redishealth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

func sharedCfg(t *testing.T, block string) (*policy.SharedHealth, *policy.Compiled) {
	t.Helper()
	cfg, _, err := policy.Parse([]byte("model_providers:\n  - model: openai/gpt-4o\nengine:\n  shared_health:\n" + block))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Engine.SharedHealth, cfg.Compiled()
}

// TLS: the server name defaults to the address's host, a CA file is
// loaded, and a file with no certificate is an error naming the key.
func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	sh, _ := sharedCfg(t, "    address: redis.internal:6380\n    tls: {enabled: true, ca_file: "+ca+"}\n")
	tc, err := tlsConfig(sh)
	if err != nil {
		t.Fatal(err)
	}
	if tc.ServerName != "redis.internal" || tc.RootCAs == nil {
		t.Errorf("server name %q, roots %v", tc.ServerName, tc.RootCAs)
	}
	sh, _ = sharedCfg(t, "    address: 10.0.0.1:6380\n    tls: {enabled: true, server_name: redis.example}\n")
	if tc, err := tlsConfig(sh); err != nil || tc.ServerName != "redis.example" || tc.RootCAs != nil {
		t.Errorf("server_name: %+v, %v", tc, err)
	}

	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	sh, c := sharedCfg(t, "    address: r:1\n    tls: {enabled: true, ca_file: "+junk+"}\n")
	if _, err := New(sh, c); err == nil || !strings.Contains(err.Error(), "engine.shared_health.tls.ca_file") {
		t.Errorf("New with a CA file holding no certificate: %v", err)
	}
}

func TestNewRefusesDisabled(t *testing.T) {
	sh, c := sharedCfg(t, "    enabled: false\n")
	if _, err := New(sh, c); err == nil {
		t.Error("New accepted a disabled shared_health")
	}
	if _, err := New(nil, c); err == nil {
		t.Error("New accepted nil")
	}
}
