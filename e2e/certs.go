package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is what a test cluster needs for TLS and service accounts, kept as PEM
// files in one folder: a CA, a serving certificate for 127.0.0.1 signed by it,
// an admin client certificate (O=system:masters) and a service-account RSA
// key pair.
type PKI struct {
	// CA is the cluster's certificate authority.
	CA *x509.Certificate
	// CAPEM is CA, PEM-encoded.
	CAPEM []byte
	// AdminCertPEM and AdminKeyPEM are the admin client credentials.
	AdminCertPEM, AdminKeyPEM []byte

	// Files, all in the folder given to NewPKI.
	CAFile, ServingCertFile, ServingKeyFile, SAPublicFile, SAPrivateFile string
}

// NewPKI makes a fresh PKI and writes its files into dir.
func NewPKI(dir string) (*PKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "e2e-kubernetes-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &PKI{CA: ca, CAPEM: pemBlock("CERTIFICATE", caDER)}

	leaf := func(serial int64, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (certPEM, keyPEM []byte, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      subject,
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
	}
	servingCert, servingKey, err := leaf(2, pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost", "kubernetes", "kubernetes.default"})
	if err != nil {
		return nil, err
	}
	p.AdminCertPEM, p.AdminKeyPEM, err = leaf(3, pkix.Name{CommonName: "kubernetes-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	if err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}

	p.CAFile = filepath.Join(dir, "ca.crt")
	p.ServingCertFile = filepath.Join(dir, "apiserver.crt")
	p.ServingKeyFile = filepath.Join(dir, "apiserver.key")
	p.SAPublicFile = filepath.Join(dir, "sa.pub")
	p.SAPrivateFile = filepath.Join(dir, "sa.key")
	files := map[string][]byte{
		p.CAFile:          p.CAPEM,
		p.ServingCertFile: servingCert,
		p.ServingKeyFile:  servingKey,
		p.SAPublicFile:    pemBlock("PUBLIC KEY", saPub),
		p.SAPrivateFile:   pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// CAHash returns the CA's public key pin as kubeadm prints it:
// "sha256:" and the hex SHA-256 of its DER SubjectPublicKeyInfo.
func (p *PKI) CAHash() string {
	sum := sha256.Sum256(p.CA.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TLSConfig trusts the cluster CA, and presents the admin client certificate
// when admin is true.
func (p *PKI) TLSConfig(admin bool) (*tls.Config, error) {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if admin {
		cert, err := tls.X509KeyPair(p.AdminCertPEM, p.AdminKeyPEM)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Kubeconfig returns an admin kubeconfig for server
// ("https://127.0.0.1:PORT"), as JSON, which kubeconfig readers accept.
func (p *PKI) Kubeconfig(server string) ([]byte, error) {
	type named map[string]any
	cfg := named{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []named{{"name": "e2e", "cluster": named{
			"server":                     server,
			"certificate-authority-data": p.CAPEM, // []byte marshals as base64
		}}},
		"users": []named{{"name": "kubernetes-admin", "user": named{
			"client-certificate-data": p.AdminCertPEM,
			"client-key-data":         p.AdminKeyPEM,
		}}},
		"contexts":        []named{{"name": "e2e", "context": named{"cluster": "e2e", "user": "kubernetes-admin"}}},
		"current-context": "e2e",
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return b, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
