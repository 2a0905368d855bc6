package clients

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// debianPython is Debian's interpreter: python3-tds is installed for it, not
// for a pyenv python3 that may come first on PATH.
const debianPython = "/usr/bin/python3"

// jtdsJars are the places Debian's libjtds-java puts the driver.
var jtdsJars = []string{"/usr/share/java/jtds.jar", "/usr/share/java/jtds-1.3.1.jar"}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	goOnce sync.Once
	goBin  string
	goErr  error

	javaOnce sync.Once
	javaCP   string
	javaErr  error
)

// cacheDir returns a per-user directory for built clients. Builds are keyed
// by a hash of their inputs, so concurrent test processes (go test runs
// packages in parallel) share them and a source change rebuilds.
func cacheDir(kind, key string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil || base == "" {
		base = os.TempDir()
	}
	d := filepath.Join(base, "tdsgate-clients", kind+"-"+key)
	return d, nil
}

func hashFiles(extra string, files ...string) (string, error) {
	h := sha256.New()
	h.Write([]byte(extra))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// gomssqlBinary builds tools/clients/gomssql once per process (cached across
// processes by input hash) and returns the binary's path.
func gomssqlBinary() (string, error) {
	goOnce.Do(func() {
		goBin, goErr = buildGoClient()
	})
	return goBin, goErr
}

func buildGoClient() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "tools", "clients", "gomssql", "main.go")
	key, err := hashFiles(runtime.Version()+runtime.GOOS+runtime.GOARCH, src, filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if err != nil {
		return "", fmt.Errorf("clients: hash go client inputs: %w", err)
	}
	dir, _ := cacheDir("gomssql", key)
	bin := filepath.Join(dir, "gomssql")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(tmp, "gomssql"), "./tools/clients/gomssql")
	cmd.Dir = root
	// The client is a plain program: keep the test's -race/-cover settings out.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clients: go build ./tools/clients/gomssql: %v\n%s", err, out)
	}
	// Atomic publish: a concurrent builder may win; either binary is the same.
	if err := os.Rename(filepath.Join(tmp, "gomssql"), bin); err != nil {
		if _, statErr := os.Stat(bin); statErr != nil {
			return "", err
		}
	}
	return bin, nil
}

// jtdsJar returns the path of Debian's jTDS jar.
func jtdsJar() (string, error) {
	for _, j := range jtdsJars {
		if _, err := os.Stat(j); err == nil {
			return j, nil
		}
	}
	return "", errors.New("jTDS jar not found in /usr/share/java: install Debian package libjtds-java (tools/deps.sh)")
}

// jtdsClasspath compiles JtdsClient.java once (cached by hash) and returns
// the classpath that runs it.
func jtdsClasspath() (string, error) {
	javaOnce.Do(func() {
		javaCP, javaErr = buildJavaClient()
	})
	return javaCP, javaErr
}

func buildJavaClient() (string, error) {
	return buildJava("jtds", "JtdsClient", "JtdsClient.java")
}

// buildJava compiles srcs (paths under tools/clients) against the jTDS jar
// into a cache directory keyed by their hash and returns the classpath that
// runs mainClass.
func buildJava(kind, mainClass string, srcs ...string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	jar, err := jtdsJar()
	if err != nil {
		return "", err
	}
	var paths []string
	for _, s := range srcs {
		paths = append(paths, filepath.Join(root, "tools", "clients", s))
	}
	key, err := hashFiles(jar, append(paths, jar)...)
	if err != nil {
		return "", fmt.Errorf("clients: hash java client inputs: %w", err)
	}
	dir, _ := cacheDir(kind, key)
	cp := dir + string(os.PathListSeparator) + jar
	if _, err := os.Stat(filepath.Join(dir, mainClass+".class")); err == nil {
		return cp, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), kind+"-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"-nowarn", "-encoding", "UTF-8", "-cp", jar, "-d", tmp}, paths...)
	out, err := exec.CommandContext(ctx, "javac", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("clients: javac %s: %v\n%s", strings.Join(srcs, " "), err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(dir, mainClass+".class")); statErr != nil {
			return "", err
		}
	}
	return cp, nil
}

// Check verifies that every client is installed and runnable. Its error names
// each missing piece and the package that provides it. Tests call it and fail
// (never skip) when something is missing: run tools/deps.sh.
func Check() error {
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	run := func(name string, args ...string) (string, error) {
		var b bytes.Buffer
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Stdout, cmd.Stderr = &b, &b
		err := cmd.Run()
		return b.String(), err
	}

	root, err := RepoRoot()
	if err != nil {
		return err
	}
	// tsql
	if out, err := run(tsqlPath(), "-C"); err != nil || !strings.Contains(out, "freetds") {
		add("tsql: %q not runnable (%v): install Debian package freetds-bin", tsqlPath(), err)
	}
	// pytds (+ pyOpenSSL for its TLS modes)
	if out, err := run(debianPython, "-c", "import pytds, OpenSSL; print(pytds.__version__)"); err != nil {
		add("pytds: %s cannot import pytds/OpenSSL (%v: %s): install Debian packages python3-tds python3-openssl", debianPython, err, strings.TrimSpace(out))
	}
	// pyodbc over FreeTDS ODBC
	if out, err := run(debianPython, "-c", "import pyodbc; print(pyodbc.version)"); err != nil {
		add("pyodbc: %s cannot import pyodbc (%v: %s): install Debian package python3-pyodbc", debianPython, err, strings.TrimSpace(out))
	}
	if out, err := run("odbcinst", "-q", "-d", "-n", "FreeTDS"); err != nil {
		add("pyodbc: no ODBC driver named FreeTDS (%v: %s): install Debian packages tdsodbc unixodbc (tools/deps.sh registers the driver)", err, strings.TrimSpace(out))
	}
	// jTDS
	if _, err := jtdsJar(); err != nil {
		add("jtds: %v", err)
	}
	if _, err := exec.LookPath("java"); err != nil {
		add("jtds: java not on PATH: install Debian package default-jdk-headless")
	}
	if _, err := exec.LookPath("javac"); err != nil {
		add("jtds: javac not on PATH: install Debian package default-jdk-headless")
	}
	if len(problems) == 0 {
		if _, err := jtdsClasspath(); err != nil {
			add("jtds: %v", err)
		}
	}
	// tedious
	if _, err := exec.LookPath("node"); err != nil {
		add("tedious: node not on PATH: install Debian package nodejs")
	} else if out, err := run("node", "-e", "require(process.argv[1]); console.log('ok')", filepath.Join(root, "tools", "clients", "node", "node_modules", "tedious")); err != nil {
		add("tedious: cannot load tools/clients/node/node_modules/tedious (%v: %s): run tools/deps.sh (npm ci in tools/clients/node)", err, strings.TrimSpace(out))
	}
	// go-mssqldb
	if _, err := gomssqlBinary(); err != nil {
		add("gomssql: %v", err)
	}
	if len(problems) > 0 {
		return errors.New("clients.Check: missing clients (run tools/deps.sh as root):\n  " + strings.Join(problems, "\n  "))
	}
	return nil
}

func tsqlPath() string {
	if p, err := exec.LookPath("tsql"); err == nil {
		return p
	}
	return "/usr/bin/tsql"
}
