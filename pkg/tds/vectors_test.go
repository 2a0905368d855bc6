package tds

import (
	"bufio"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadHex reads a test vector .hex file (testdata/README.md): '#' lines
// are provenance, the rest are hex bytes of whole TDS messages, packet
// headers included.
func loadHex(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sb.WriteString(strings.ReplaceAll(line, " ", ""))
	}
	b, err := hex.DecodeString(sb.String())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// loadCapture reads a clientcap .log file: each hex line after a
// '# C->S' line is one client-to-server packet.
func loadCapture(t testing.TB, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(line)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, b)
	}
	return out
}

// msg reassembles the first message in b.
func msg(t testing.TB, b []byte) Message {
	t.Helper()
	m, err := NewMessageReader(strings.NewReader(string(b)), MaxPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatalf("reassemble: %v", err)
	}
	return m
}

func vec(name string) string { return filepath.Join("testdata", name) }
