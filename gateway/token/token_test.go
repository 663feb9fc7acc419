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
		"exp not a number":      sign(jwt.SigningMethodHS256, cur, jwt.MapClaims{"sub": "alice", "exp": "tomorrow"}),
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
		if errors.Is(err, ErrNotYetValid) {
			t.Errorf("%s: Verify = %v; not ErrNotYetValid", name, err)
		}
	}
}

// TestVerifyTimesAudienceIssuer: "nbf" has a leeway of NotBeforeLeeway and
// "exp" none; a verifier that requires an audience or an issuer refuses
// tokens without them (as invalid, not expired, whatever their times), and
// one that requires neither accepts any.
func TestVerifyTimesAudienceIssuer(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	plain, _ := NewVerifier(cur)
	strict, err := NewVerifierWith(Options{Secrets: [][]byte{cur}, Audience: "herald", Issuer: "https://auth.example"})
	if err != nil {
		t.Fatal(err)
	}
	audOnly, _ := NewVerifierWith(Options{Secrets: [][]byte{cur}, Audience: "herald"})
	issOnly, _ := NewVerifierWith(Options{Secrets: [][]byte{cur}, Issuer: "https://auth.example"})
	for _, v := range []*Verifier{plain, strict, audOnly, issOnly} {
		v.now = func() time.Time { return now }
	}
	const (
		ok      = "ok"
		invalid = "invalid" // ErrInvalid only
		expired = "expired"
		notYet  = "not yet valid"
	)
	type claims = jwt.MapClaims
	base := func(extra claims) claims {
		c := claims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "aud": "herald", "iss": "https://auth.example"}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	for _, tc := range []struct {
		name string
		v    *Verifier
		c    claims
		want string
	}{
		{"all required claims", strict, base(nil), ok},
		{"audience among several", strict, base(claims{"aud": []string{"billing", "herald"}}), ok},
		{"no aud or iss, none required", plain, base(claims{"aud": nil, "iss": nil}), ok},
		{"any aud and iss, none required", plain, base(claims{"aud": "billing", "iss": "someone"}), ok},
		{"no aud", strict, base(claims{"aud": nil}), invalid},
		{"other aud", strict, base(claims{"aud": "billing"}), invalid},
		{"aud in other case", strict, base(claims{"aud": "Herald"}), invalid},
		{"no iss", strict, base(claims{"iss": nil}), invalid},
		{"other iss", strict, base(claims{"iss": "https://evil.example"}), invalid},
		{"aud required, other iss fine", audOnly, base(claims{"iss": "someone"}), ok},
		{"aud required, missing", audOnly, base(claims{"aud": nil}), invalid},
		{"iss required, other aud fine", issOnly, base(claims{"aud": "billing"}), ok},
		{"iss required, missing", issOnly, base(claims{"iss": nil}), invalid},
		{"other aud and expired", strict, base(claims{"aud": "billing", "exp": now.Add(-time.Hour).Unix()}), invalid},
		{"no iss and not yet valid", strict, base(claims{"iss": nil, "nbf": now.Add(time.Hour).Unix()}), invalid},
		{"exp one second ago", strict, base(claims{"exp": now.Add(-time.Second).Unix()}), expired},
		{"exp now", strict, base(claims{"exp": now.Unix()}), expired},
		{"exp in one second", strict, base(claims{"exp": now.Add(time.Second).Unix()}), ok},
		{"nbf in the past", strict, base(claims{"nbf": now.Add(-time.Minute).Unix()}), ok},
		{"nbf now", strict, base(claims{"nbf": now.Unix()}), ok},
		{"nbf within the leeway", strict, base(claims{"nbf": now.Add(NotBeforeLeeway).Unix()}), ok},
		{"nbf just past the leeway", strict, base(claims{"nbf": now.Add(NotBeforeLeeway + time.Second).Unix()}), notYet},
		{"nbf in an hour", plain, base(claims{"nbf": now.Add(time.Hour).Unix()}), notYet},
		{"nbf not a number", plain, base(claims{"nbf": "later"}), invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc.c).SignedString(cur)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tc.v.Verify(tok)
			got := ok
			switch {
			case errors.Is(err, ErrExpired) && errors.Is(err, ErrNotYetValid):
				got = "both"
			case errors.Is(err, ErrExpired):
				got = expired
			case errors.Is(err, ErrNotYetValid):
				got = notYet
			case err != nil:
				got = invalid
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if got != tc.want {
				t.Fatalf("Verify = %+v, %v: %s, want %s", c, err, got, tc.want)
			}
			if got == ok && (c.User != "alice" || !c.Expires.Equal(time.Unix(tc.c["exp"].(int64), 0))) {
				t.Fatalf("claims %+v, want alice expiring at %v", c, tc.c["exp"])
			}
		})
	}
}

// TestSignOptions: what Sign's options set, strict verifiers accept; an
// empty audience or issuer sets nothing.
func TestSignOptions(t *testing.T) {
	strict, _ := NewVerifierWith(Options{Secrets: [][]byte{cur}, Audience: "herald", Issuer: "dev"})
	tok, err := Sign(cur, "alice", time.Minute, WithAudience("herald"), WithIssuer("dev"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := strict.Verify(tok); err != nil || c.User != "alice" {
		t.Fatalf("Verify(Sign with aud and iss) = %+v, %v", c, err)
	}
	tok, _ = Sign(cur, "alice", time.Minute, WithAudience(""), WithIssuer(""))
	var rc jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &rc); err != nil || rc.Audience != nil || rc.Issuer != "" {
		t.Fatalf("empty options set aud %q, iss %q (%v)", rc.Audience, rc.Issuer, err)
	}
	if _, err := strict.Verify(tok); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a token without aud and iss verified by a strict verifier: %v", err)
	}
	tok, _ = Sign(cur, "alice", time.Hour, WithNotBefore(time.Now().Add(time.Minute)))
	if _, err := strict.Verify(tok); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotYetValid) {
		t.Fatalf("not yet valid and without aud: %v, want invalid only", err)
	}
	plain, _ := NewVerifier(cur)
	if _, err := plain.Verify(tok); !errors.Is(err, ErrNotYetValid) {
		t.Fatalf("WithNotBefore a minute ahead: %v, want ErrNotYetValid", err)
	}
	if _, err := Sign(cur, "a\x00b", time.Minute); err == nil {
		t.Fatal("Sign accepted a user with a control character")
	}
}

func TestNewVerifierRejectsWeakSecrets(t *testing.T) {
	if _, err := NewVerifier(); err == nil {
		t.Error("no secret accepted")
	}
	if _, err := NewVerifier([]byte(strings.Repeat("x", 31))); err == nil {
		t.Error("a 31-byte secret accepted")
	}
	if _, err := NewVerifierWith(Options{Audience: "herald"}); err == nil {
		t.Error("options without a secret accepted")
	}
	if _, err := NewVerifierWith(Options{Secrets: [][]byte{cur, []byte("short")}}); err == nil {
		t.Error("a short second secret accepted")
	}
}
