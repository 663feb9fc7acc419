package token

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var (
	old = []byte("an old secret of at least 32 bytes!!")
	cur = []byte("the current secret, also 32 bytes long")
)

func TestVerify(t *testing.T) {
	v, err := NewVerifier(cur, old)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range [][]byte{cur, old} { // rotation: both verify
		tok, err := Sign(secret, "alice", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		c, err := v.Verify(tok)
		if err != nil || c.User != "alice" || time.Until(c.Expires) > time.Minute || time.Until(c.Expires) < 50*time.Second {
			t.Fatalf("Verify = %+v, %v", c, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	v, _ := NewVerifier(cur)
	other := []byte("somebody else's secret, 32 bytes or more")
	sign := func(m jwt.SigningMethod, key any, c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(m, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	exp := time.Now().Add(time.Hour).Unix()
	good := sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"sub": "alice", "exp": exp})
	for name, tok := range map[string]string{
		"garbage":               "not.a.token",
		"empty":                 "",
		"wrong secret":          sign(jwt.SigningMethodHS256, other, jwt.MapClaims{"sub": "alice", "exp": exp}),
		"expired":               sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Second).Unix()}),
		"expired, wrong secret": sign(jwt.SigningMethodHS256, other, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Second).Unix()}),
		"no exp":                sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"sub": "alice"}),
		"no sub":                sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"exp": exp}),
		"control in sub":        sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"sub": "a\nb", "exp": exp}),
		"HS512":                 sign(jwt.SigningMethodHS512, cur, jwt.MapClaims{"sub": "alice", "exp": exp}),
		"alg none":              sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp}),
		"bad signature":         good[:len(good)-2] + "xx",
	} {
		c, err := v.Verify(tok)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Verify = %+v, %v; want ErrInvalid", name, c, err)
		}
		if errors.Is(err, ErrExpired) != (name == "expired") {
			t.Errorf("%s: Verify = %v; ErrExpired only for a correctly signed expired token", name, err)
		}
	}
}

func TestNewVerifierRejectsWeakSecrets(t *testing.T) {
	if _, err := NewVerifier(); err == nil {
		t.Error("no secret accepted")
	}
	if _, err := NewVerifier([]byte(strings.Repeat("x", 31))); err == nil {
		t.Error("a 31-byte secret accepted")
	}
}
