package clients

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"os"
)

// Scalar returns the first column of the first row of the first result set
// of step i, or nil when there is none.
func (r Result) Scalar(i int) any {
	if i < 0 || i >= len(r.Steps) {
		return nil
	}
	for _, rs := range r.Steps[i].Results {
		if len(rs.Rows) > 0 && len(rs.Rows[0]) > 0 {
			return rs.Rows[0][0]
		}
	}
	return nil
}

// Rows returns the rows of the first result set of step i (nil if none).
func (r Result) Rows(i int) [][]any {
	if i < 0 || i >= len(r.Steps) || len(r.Steps[i].Results) == 0 {
		return nil
	}
	return r.Steps[i].Results[0].Rows
}

// StepErr returns step i's failure: its error, "unsupported", or "not ok".
func (r Result) StepErr(i int) error {
	if i < 0 || i >= len(r.Steps) {
		return fmt.Errorf("%s: no step %d (ran %d)", r.Client, i, len(r.Steps))
	}
	st := r.Steps[i]
	switch {
	case st.Error != nil:
		return fmt.Errorf("%s: step %d (%s): %w", r.Client, i, st.Op, st.Error)
	case st.Unsupported:
		return fmt.Errorf("%s: step %d (%s): unsupported by this client", r.Client, i, st.Op)
	case !st.OK:
		return fmt.Errorf("%s: step %d (%s): not ok", r.Client, i, st.Op)
	}
	return nil
}

// Err returns nil when the client connected and every step succeeded;
// otherwise the login error or the first failed step.
func (r Result) Err() error {
	if !r.Connected {
		if r.LoginError != nil {
			return fmt.Errorf("%s: not connected: %w", r.Client, r.LoginError)
		}
		return fmt.Errorf("%s: not connected", r.Client)
	}
	for i := range r.Steps {
		if err := r.StepErr(i); err != nil {
			return err
		}
	}
	return nil
}

// WriteCAFile writes the certificate chain of cert as PEM into dir and
// returns the file's path, for Spec.CAFile: a test server's self-signed
// certificate is then the trusted CA. Needed for encrypt=strict, where
// every driver verifies the certificate (and the host name: a
// certutil.SelfSigned certificate covers 127.0.0.1 and localhost).
func WriteCAFile(dir string, cert tls.Certificate) (string, error) {
	var b bytes.Buffer
	for _, der := range cert.Certificate {
		if err := pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			return "", err
		}
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("clients: WriteCAFile: certificate has no chain")
	}
	f, err := os.CreateTemp(dir, "ca-*.pem")
	if err != nil {
		return "", err
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return "", err
	}
	return f.Name(), f.Close()
}
