package passhash

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	enc, err := New("YourStr0ngP@ssword1")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(enc, "$")
	if len(parts) != 4 || parts[0] != Scheme || parts[1] != "10000" {
		t.Fatalf("format: %q", enc)
	}
	if salt, _ := base64.RawStdEncoding.DecodeString(parts[2]); len(salt) != SaltLen {
		t.Fatalf("salt length %d", len(salt))
	}
	h, err := Parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	if h.Encode() != enc {
		t.Fatalf("Encode(Parse(x)) = %q, want %q", h.Encode(), enc)
	}
	if !h.Verify("YourStr0ngP@ssword1") {
		t.Fatal("right password rejected")
	}
	for _, wrong := range []string{"", "YourStr0ngP@ssword2", "yourstr0ngp@ssword1", "YourStr0ngP@ssword1 "} {
		if h.Verify(wrong) {
			t.Fatalf("wrong password %q accepted", wrong)
		}
	}
	ok, err := Verify(enc, "YourStr0ngP@ssword1")
	if !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
	// A second hash of the same password has a different salt.
	enc2, _ := New("YourStr0ngP@ssword1")
	if enc2 == enc {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
}

func TestIterationsBounds(t *testing.T) {
	if _, err := NewWithIterations("x", MinIterations-1); err == nil {
		t.Fatal("too few iterations accepted")
	}
	if _, err := NewWithIterations("x", MaxIterations+1); err == nil {
		t.Fatal("too many iterations accepted")
	}
	enc, err := NewWithIterations("x", MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := Verify(enc, "x"); !ok {
		t.Fatal("min-iterations hash does not verify")
	}
	if _, err := New(""); err != ErrEmptyPassword {
		t.Fatalf("empty password: %v", err)
	}
}

func TestTampered(t *testing.T) {
	enc, err := New("secret")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(enc, "$")
	flip := func(field string) string {
		raw, _ := base64.RawStdEncoding.DecodeString(field)
		raw[0] ^= 1
		return base64.RawStdEncoding.EncodeToString(raw)
	}
	for name, tampered := range map[string]string{
		"key":        strings.Join([]string{parts[0], parts[1], parts[2], flip(parts[3])}, "$"),
		"salt":       strings.Join([]string{parts[0], parts[1], flip(parts[2]), parts[3]}, "$"),
		"iterations": strings.Join([]string{parts[0], "10001", parts[2], parts[3]}, "$"),
	} {
		ok, err := Verify(tampered, "secret")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ok {
			t.Fatalf("tampered %s still verifies", name)
		}
	}
}

func TestMalformed(t *testing.T) {
	enc, _ := New("secret")
	p := strings.Split(enc, "$")
	key31 := base64.RawStdEncoding.EncodeToString(make([]byte, 31))
	salt4 := base64.RawStdEncoding.EncodeToString(make([]byte, 4))
	cases := map[string]string{
		"empty":            "",
		"plaintext":        "YourStr0ngP@ssword1",
		"three fields":     strings.Join(p[:3], "$"),
		"five fields":      enc + "$x",
		"scheme":           strings.Join([]string{"pbkdf2-sha1", p[1], p[2], p[3]}, "$"),
		"iterations text":  strings.Join([]string{p[0], "ten", p[2], p[3]}, "$"),
		"iterations plus":  strings.Join([]string{p[0], "+10000", p[2], p[3]}, "$"),
		"iterations zero":  strings.Join([]string{p[0], "010000", p[2], p[3]}, "$"),
		"iterations low":   strings.Join([]string{p[0], "1", p[2], p[3]}, "$"),
		"iterations high":  strings.Join([]string{p[0], "99999999", p[2], p[3]}, "$"),
		"salt padded":      strings.Join([]string{p[0], p[1], p[2] + "==", p[3]}, "$"),
		"salt not base64":  strings.Join([]string{p[0], p[1], "!!!!", p[3]}, "$"),
		"salt short":       strings.Join([]string{p[0], p[1], salt4, p[3]}, "$"),
		"key short":        strings.Join([]string{p[0], p[1], p[2], key31}, "$"),
		"key not base64":   strings.Join([]string{p[0], p[1], p[2], "%%%"}, "$"),
		"key url alphabet": strings.Join([]string{p[0], p[1], p[2], strings.NewReplacer("+", "-", "/", "_").Replace(p[3]) + "-_"}, "$"),
	}
	for name, s := range cases {
		if _, err := Parse(s); err == nil {
			t.Errorf("%s: %q parsed", name, s)
		} else if strings.Contains(err.Error(), p[3]) || strings.Contains(err.Error(), p[2]) {
			t.Errorf("%s: error quotes the hash: %v", name, err)
		}
		if _, err := Verify(s, "secret"); err == nil {
			t.Errorf("%s: Verify accepted a malformed hash", name)
		}
	}
}

func TestRedactedPrint(t *testing.T) {
	enc, _ := New("secret")
	h, _ := Parse(enc)
	key := strings.Split(enc, "$")[3]
	for _, s := range []string{fmt.Sprint(h), fmt.Sprint(*h), fmt.Sprintf("%+v", h), fmt.Sprintf("%#v", h), fmt.Sprintf("%v", []*Hash{h})} {
		if strings.Contains(s, key) || !strings.Contains(s, "redacted") {
			t.Fatalf("printed hash not redacted: %s", s)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	enc, _ := New("YourStr0ngP@ssword1")
	h, _ := Parse(enc)
	for b.Loop() {
		h.Verify("YourStr0ngP@ssword1")
	}
}
