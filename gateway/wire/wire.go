// Package wire is the contract between herald's parts and its clients: the
// WebSocket frames and close codes, the NATS subjects and headers, and the
// doorbell a dispatcher rings a gateway with. Every decoder here takes
// untrusted bytes, checks everything, and is fuzzed.
package wire

import (
	"encoding/base64"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// WebSocket close codes. The 4xxx codes are herald's; each tells the client
// what to do next (DESIGN.md, "Wire formats").
const (
	CloseMoved          = 4001 // reconnect to the moved frame's URL now
	CloseAuthTimeout    = 4002 // no auth frame in time: retry with backoff
	CloseUnauthorized   = 4003 // bad token: stop, get a new token
	CloseTokenExpired   = 4004 // get a new token, then resume
	CloseSlowConsumer   = 4008 // a write timed out: resume with backoff
	CloseTooManySockets = 4009 // the user has too many sockets: long backoff
	CloseServiceRestart = 1012 // reconnect with jitter
	CloseTryAgainLater  = 1013 // backoff
	CloseBadFrame       = 1008 // a malformed frame after auth (policy violation)
	CloseTooBig         = 1009 // a frame over the client frame limit
	CloseGoingAway      = 1001
	CloseNormal         = 1000
)

// Close is how a gateway ends a socket: the code tells the client what to do
// next, the reason (at most 123 bytes) is for people.
type Close struct {
	Code   int
	Reason string
}

func (c Close) Error() string { return fmt.Sprintf("close %d: %s", c.Code, c.Reason) }

// Limits on what clients send.
const (
	MaxUserBytes  = 256
	MaxIDBytes    = 128  // idempotency keys
	MaxTokenBytes = 3072 // a JWT in an auth frame
	MaxEpochBytes = 64
	MaxRingBytes  = 64
)

// NATS subjects of the default deployment (see Deployment for others).
const (
	// InboxPrefix prefixes each user's log subject: herald.inbox.<userkey>.
	InboxPrefix = "herald.inbox."
	// BroadcastSubject carries live-only broadcasts to every gateway.
	BroadcastSubject = "herald.broadcast"
)

// InboxSubject is the subject of user's log in the default deployment.
func InboxSubject(user string) string { return Deployment("").Inbox(user) }

// GatewaySubject is where a gateway of the default deployment is rung.
func GatewaySubject(gatewayID string) string { return Deployment("").Gateway(gatewayID) }

// LiveSubject is where a gateway of the default deployment answers
// liveness requests with its instance nonce.
func LiveSubject(gatewayID string) string { return Deployment("").Live(gatewayID) }

// StatsSubject is where a gateway of the default deployment answers
// requests for its socket counts.
func StatsSubject(gatewayID string) string { return Deployment("").Stats(gatewayID) }

// UserKey encodes a user ID as one subject-safe token, reversibly:
// base64url without padding.
func UserKey(user string) string { return base64.RawURLEncoding.EncodeToString([]byte(user)) }

// UserFromKey decodes a UserKey and validates the user ID.
func UserFromKey(key string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("bad user key %q: %w", key, err)
	}
	if err := ValidateUser(string(b)); err != nil {
		return "", err
	}
	return string(b), nil
}

// ErrBadUser is wrapped by every user ID validation error.
var ErrBadUser = errors.New("invalid user ID")

// ValidateUser checks a user ID: 1 to 256 bytes of UTF-8 without control
// characters or U+FFFD. IDs are compared byte for byte; nothing is
// normalized. U+FFFD is what a JSON decoder makes of a lone surrogate
// escape ("\ud800"), so two different requests would name the same user.
func ValidateUser(user string) error {
	switch {
	case user == "":
		return fmt.Errorf("%w: empty", ErrBadUser)
	case len(user) > MaxUserBytes:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadUser, len(user), MaxUserBytes)
	case !utf8.ValidString(user):
		return fmt.Errorf("%w: not UTF-8", ErrBadUser)
	}
	for _, r := range user {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("%w: contains %U", ErrBadUser, r)
		}
	}
	return nil
}

// ValidateID checks an idempotency key: 1 to 128 bytes of UTF-8 without
// control characters or U+FFFD (as ValidateUser), and without a space at
// either end: IDs travel in NATS headers, whose values lose the spaces at
// their ends, so "x " would be taken for a duplicate of "x".
func ValidateID(id string) error {
	switch {
	case id == "":
		return errors.New("invalid id: empty")
	case len(id) > MaxIDBytes:
		return fmt.Errorf("invalid id: %d bytes, at most %d", len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return errors.New("invalid id: not UTF-8")
	case id[0] == ' ' || id[len(id)-1] == ' ':
		return errors.New("invalid id: begins or ends with a space")
	}
	for _, r := range id {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("invalid id: contains %U", r)
		}
	}
	return nil
}
