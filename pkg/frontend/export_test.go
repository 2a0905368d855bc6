package frontend

// SetTestHook makes Serve call f at each stage ("handshake", "admitted",
// "relay"); a panic in f is a panic in the session. It returns a function
// that removes the hook.
func SetTestHook(f func(stage string)) (restore func()) {
	testHook.Store(&f)
	return func() { testHook.Store(nil) }
}
