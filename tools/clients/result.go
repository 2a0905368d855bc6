package clients

import "fmt"

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
