package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	configPath := flag.String("config", "", "path to the YAML config file (empty: the built-in demo config)")
	flag.Parse()
	if err := run(*configPath); err != nil {
		fmt.Fprintln(os.Stderr, "tdsgate:", err)
		os.Exit(1)
	}
}
