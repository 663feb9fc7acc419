// Package token signs and verifies herald's user tokens: JWTs signed with
// HS256 whose subject is the user ID and whose expiry is required. Several
// secrets may be configured so they can be rotated: tokens signed with any of
// them verify. A verifier may also require an audience and an issuer, so a
// token that another service's issuer signed with a shared secret, or that
// was meant for another service, is refused.
package token

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldpush/herald/gateway/wire"
)

// NotBeforeLeeway is how early a token is accepted before its "nbf": the
// issuer's clock and the gateway's differ a little, and a token used the
// moment it is issued must not be refused for it. "exp" has no leeway: a
// token is never accepted after its expiry.
const NotBeforeLeeway = 5 * time.Second

// Claims are what a verified token says.
type Claims struct {
	User    string
	Expires time.Time
}

// Options configure a Verifier.
type Options struct {
	// Secrets are the HS256 secrets a token may be signed with; several
	// allow rotation. At least one, each at least 32 bytes.
	Secrets [][]byte
	// Audience, if not empty, must be one of the token's "aud" values.
	Audience string
	// Issuer, if not empty, must equal the token's "iss".
	Issuer string
}

// Verifier checks user tokens. It is safe for concurrent use.
type Verifier struct {
	keys     jwt.VerificationKeySet
	audience string
	issuer   string
	now      func() time.Time // time.Now; tests move it
}

// NewVerifier returns a verifier accepting tokens signed with any of the
// secrets, whatever their audience and issuer. Each secret must be at least
// 32 bytes.
func NewVerifier(secrets ...[]byte) (*Verifier, error) {
	return NewVerifierWith(Options{Secrets: secrets})
}

// NewVerifierWith returns a verifier as NewVerifier does that also requires
// the audience and issuer o names.
func NewVerifierWith(o Options) (*Verifier, error) {
	if len(o.Secrets) == 0 {
		return nil, errors.New("token: no secret")
	}
	v := &Verifier{audience: o.Audience, issuer: o.Issuer, now: time.Now}
	for i, s := range o.Secrets {
		if len(s) < 32 {
			return nil, fmt.Errorf("token: secret %d is %d bytes, want at least 32", i+1, len(s))
		}
		v.keys.Keys = append(v.keys.Keys, s)
	}
	return v, nil
}

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("invalid token")

// ErrExpired is wrapped, besides ErrInvalid, when a token that is otherwise
// valid (signature, subject, audience, issuer) has expired. The client
// should get a new token rather than give up: a token can expire between
// /v1/connect and the auth frame.
var ErrExpired = errors.New("token expired")

// ErrNotYetValid is wrapped, besides ErrInvalid, when a token that is
// otherwise valid has an "nbf" more than NotBeforeLeeway in the future. As
// with ErrExpired the client should get a new token and try again: the
// issuer's clock is ahead, or the token was made for later.
var ErrNotYetValid = errors.New("token not valid yet")

// Verify checks the token's signature and algorithm, then its subject,
// audience and issuer, then its expiry and not-before. So ErrExpired and
// ErrNotYetValid only ever describe a token that was meant for this
// verifier: a token for another audience is plainly invalid, expired or not.
func (v *Verifier) Verify(tok string) (Claims, error) {
	var rc jwt.RegisteredClaims
	// The library's own claim checks apply one leeway to exp and nbf
	// alike; ours differ, so the claims are checked below.
	_, err := jwt.ParseWithClaims(tok, &rc, func(*jwt.Token) (any, error) { return v.keys, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(),
	)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := wire.ValidateUser(rc.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: subject: %v", ErrInvalid, err)
	}
	if v.audience != "" && !slices.Contains(rc.Audience, v.audience) {
		return Claims{}, fmt.Errorf("%w: audience %q, want %q", ErrInvalid, []string(rc.Audience), v.audience)
	}
	if v.issuer != "" && rc.Issuer != v.issuer {
		return Claims{}, fmt.Errorf("%w: issuer %q, want %q", ErrInvalid, rc.Issuer, v.issuer)
	}
	if rc.ExpiresAt == nil {
		return Claims{}, fmt.Errorf("%w: no expiry (exp)", ErrInvalid)
	}
	now := v.now()
	if !now.Before(rc.ExpiresAt.Time) {
		return Claims{}, fmt.Errorf("%w: %w at %s", ErrInvalid, ErrExpired, rc.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if rc.NotBefore != nil && now.Add(NotBeforeLeeway).Before(rc.NotBefore.Time) {
		return Claims{}, fmt.Errorf("%w: %w before %s", ErrInvalid, ErrNotYetValid, rc.NotBefore.UTC().Format(time.RFC3339))
	}
	return Claims{User: rc.Subject, Expires: rc.ExpiresAt.Time}, nil
}

// SignOption sets a claim of a token Sign makes.
type SignOption func(*jwt.RegisteredClaims)

// WithAudience sets the token's "aud"; an empty aud sets none, so a
// configured audience can be passed whether or not there is one.
func WithAudience(aud string) SignOption {
	return func(c *jwt.RegisteredClaims) {
		if aud != "" {
			c.Audience = jwt.ClaimStrings{aud}
		}
	}
}

// WithIssuer sets the token's "iss"; an empty iss sets none.
func WithIssuer(iss string) SignOption {
	return func(c *jwt.RegisteredClaims) { c.Issuer = iss }
}

// WithNotBefore sets the token's "nbf".
func WithNotBefore(t time.Time) SignOption {
	return func(c *jwt.RegisteredClaims) { c.NotBefore = jwt.NewNumericDate(t) }
}

// Sign makes a token for user that expires after ttl, signed with secret:
// for tests, dev mode and tools; production tokens come from the
// application's own issuer.
func Sign(secret []byte, user string, ttl time.Duration, opts ...SignOption) (string, error) {
	if err := wire.ValidateUser(user); err != nil {
		return "", err
	}
	now := time.Now()
	c := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	for _, o := range opts {
		o(&c)
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
