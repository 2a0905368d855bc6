package main

import "errors"

// run builds the application from the config and serves until a signal.
func run(configPath string) error {
	_ = configPath
	return errors.New("the proxy's data path is not yet available (issue: the proxy's data path)")
}
