package certutil

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// LoadOrCreate loads the certificate and key kept in one PEM file at
// path, or, when there is no file there, generates a self-signed
// certificate for commonName and writes it there (mode 0600, through a
// temporary file and a rename), so that the same certificate comes back
// at every start and clients can pin it. created tells which.
func LoadOrCreate(path, commonName string) (cert tls.Certificate, created bool, err error) {
	c, err := tls.LoadX509KeyPair(path, path)
	if err == nil {
		return c, false, nil
	}
	if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate %s: %w", path, err)
	}
	c, err = SelfSigned(commonName)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	b, err := EncodePEM(c)
	if err != nil {
		return tls.Certificate{}, false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tdsgate-cert-*")
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(b)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
	}
	if err != nil {
		tmp.Close()
		return tls.Certificate{}, false, fmt.Errorf("self-signed certificate %s: %w", path, err)
	}
	return c, true, nil
}

// EncodePEM encodes c's chain and its ECDSA key as PEM (CERTIFICATE
// blocks, then an EC PRIVATE KEY block).
func EncodePEM(c tls.Certificate) ([]byte, error) {
	var b bytes.Buffer
	for _, der := range c.Certificate {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	k, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("certutil: key of type %T", c.PrivateKey)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	return b.Bytes(), nil
}

// Reloader holds the certificate shown to clients and swaps it when its
// files change: a tls.Config with GetCertificate set to the Reloader's
// serves every new handshake with the certificate in force, while
// sessions under way keep theirs. It is safe for concurrent use.
type Reloader struct {
	cur atomic.Pointer[tls.Certificate]

	mu                sync.Mutex
	certFile, keyFile string // "" for a generated certificate: nothing to reload
	stamp             stamp
}

// stamp identifies the versions of the two files: modification times and
// sizes.
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func stampOf(certFile, keyFile string) (stamp, error) {
	ci, err := os.Stat(certFile)
	if err != nil {
		return stamp{}, err
	}
	ki, err := os.Stat(keyFile)
	if err != nil {
		return stamp{}, err
	}
	return stamp{certMod: ci.ModTime(), keyMod: ki.ModTime(), certSize: ci.Size(), keySize: ki.Size()}, nil
}

// NewReloader holds cert, loaded from certFile and keyFile ("" for a
// generated certificate).
func NewReloader(cert tls.Certificate, certFile, keyFile string) *Reloader {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	r.cur.Store(&cert)
	if certFile != "" {
		r.stamp, _ = stampOf(certFile, keyFile)
	}
	return r
}

// GetCertificate is for tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cur.Load(), nil
}

// Certificate is the certificate in force.
func (r *Reloader) Certificate() tls.Certificate { return *r.cur.Load() }

// Load loads certFile and keyFile (as a reload names them; "" keeps the
// files and the certificate in force) and makes them the certificate in
// force. On error the certificate in force stays.
func (r *Reloader) Load(certFile, keyFile string) (changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if certFile == "" {
		certFile, keyFile = r.certFile, r.keyFile
	}
	if certFile == "" {
		return false, nil
	}
	return r.loadLocked(certFile, keyFile)
}

func (r *Reloader) loadLocked(certFile, keyFile string) (bool, error) {
	st, err := stampOf(certFile, keyFile)
	if err != nil {
		return false, err
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return false, err
	}
	old := r.cur.Load()
	changed := len(old.Certificate) == 0 || !bytes.Equal(old.Certificate[0], c.Certificate[0])
	r.cur.Store(&c)
	r.certFile, r.keyFile, r.stamp = certFile, keyFile, st
	return changed, nil
}

// Check reloads the files if their modification time or size changed
// since the last load; the cheap poll behind Watch.
func (r *Reloader) Check() (changed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.certFile == "" {
		return false, nil
	}
	st, err := stampOf(r.certFile, r.keyFile)
	if err != nil {
		return false, err
	}
	if st == r.stamp {
		return false, nil
	}
	changed, err = r.loadLocked(r.certFile, r.keyFile)
	if err != nil {
		// Remember the version that failed: it is reported once, and the
		// pair is tried again when either file changes (a pair caught
		// half-written: the next write changes the stamp).
		r.stamp = st
	}
	return changed, err
}

// Watch polls the files every interval until stop is closed, calling
// report after every check that loaded a new certificate or failed.
func (r *Reloader) Watch(interval time.Duration, stop <-chan struct{}, report func(changed bool, err error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if changed, err := r.Check(); changed || err != nil {
			report(changed, err)
		}
	}
}
