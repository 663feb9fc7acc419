// Package token signs and verifies herald's user tokens: JWTs signed with
// HS256 whose subject is the user ID and whose expiry is required. Several
// secrets may be configured so they can be rotated: tokens signed with any of
// them verify.
package token

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldpush/herald/gateway/wire"
)

// Claims are what a verified token says.
type Claims struct {
	User    string
	Expires time.Time
}

// Verifier checks user tokens.
type Verifier struct {
	keys jwt.VerificationKeySet
}

// NewVerifier returns a verifier accepting tokens signed with any of the
// secrets. Each secret must be at least 32 bytes.
func NewVerifier(secrets ...[]byte) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("token: no secret")
	}
	v := &Verifier{}
	for i, s := range secrets {
		if len(s) < 32 {
			return nil, fmt.Errorf("token: secret %d is %d bytes, want at least 32", i+1, len(s))
		}
		v.keys.Keys = append(v.keys.Keys, s)
	}
	return v, nil
}

// ErrInvalid is wrapped by every verification failure.
var ErrInvalid = errors.New("invalid token")

// ErrExpired is wrapped, besides ErrInvalid, when a correctly signed token
// has expired. The client should get a new token rather than give up: a
// token can expire between /v1/connect and the auth frame.
var ErrExpired = errors.New("token expired")

// Verify checks the token's signature, algorithm, expiry and subject.
func (v *Verifier) Verify(tok string) (Claims, error) {
	var rc jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(tok, &rc, func(*jwt.Token) (any, error) { return v.keys, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(0),
	)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return Claims{}, fmt.Errorf("%w: %w: %v", ErrInvalid, ErrExpired, err)
	}
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := wire.ValidateUser(rc.Subject); err != nil {
		return Claims{}, fmt.Errorf("%w: subject: %v", ErrInvalid, err)
	}
	return Claims{User: rc.Subject, Expires: rc.ExpiresAt.Time}, nil
}

// Sign makes a token for user that expires after ttl, signed with secret.
func Sign(secret []byte, user string, ttl time.Duration) (string, error) {
	if err := wire.ValidateUser(user); err != nil {
		return "", err
	}
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}).SignedString(secret)
}
