package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "admin" {
		os.Exit(runAdmin(os.Args[2:], os.Stdout, os.Stderr))
	}
	reexecWithSmallStacks()
	if len(os.Args) > 1 && os.Args[1] == "hash-password" {
		if err := hashPassword(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "tdsgate:", err)
			os.Exit(1)
		}
		return
	}
	configPath := flag.String("config", "", "path to the YAML config file (empty: the embedded demo config)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [-config file.yaml]\n       %s hash-password   (reads a password on stdin, prints its hash for a route's password_hash)\n       %s admin COMMAND   (the admin API: buckets, sessions, pools, instances, kill, pause, resume, drain, reload; %s admin -h)\n", os.Args[0], os.Args[0], os.Args[0], os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*configPath); err != nil {
		fmt.Fprintln(os.Stderr, "tdsgate:", err)
		os.Exit(1)
	}
}
