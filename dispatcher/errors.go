package dispatcher

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/heraldpush/herald/gateway/inbox"
)

// Code is the machine-readable kind of an error the API answers with. Codes
// are part of the HTTP contract: clients branch on them, so they never change
// meaning.
type Code string

// Error codes. Each maps to one HTTP status in httpStatus.
const (
	CodeInvalidJSON      Code = "invalid_json"           // 400: the body is not the expected JSON
	CodeInvalidUser      Code = "invalid_user"           // 400: wire.ValidateUser refused the user ID
	CodeInvalidID        Code = "invalid_id"             // 400: wire.ValidateID refused the idempotency key
	CodeInvalidData      Code = "invalid_data"           // 400: data missing, null or not UTF-8
	CodeInvalidParameter Code = "invalid_parameter"      // 400: a bad query parameter (wait, timeout)
	CodeInvalidTTL       Code = "invalid_ttl"            // 400: ttl is not a whole number of seconds in 1..MaxTTL
	CodeInvalidCollapse  Code = "invalid_collapse"       // 400: wire.ValidateCollapse refused the collapse key
	CodeUnauthorized     Code = "unauthorized"           // 401: missing or wrong API key or user token
	CodeNotFound         Code = "not_found"              // 404: no such route
	CodeMethodNotAllowed Code = "method_not_allowed"     // 405: the route exists; the Allow header lists its methods
	CodePayloadTooLarge  Code = "payload_too_large"      // 413: data or body over the limit
	CodeBatchTooLarge    Code = "batch_too_large"        // 413: more notifications than MaxBatch
	CodeUnsupportedMedia Code = "unsupported_media_type" // 415: Content-Type is not application/json
	CodeRateLimited      Code = "rate_limited"           // 429: the API key's rate limit; see Retry-After
	CodeInternal         Code = "internal"               // 500: a bug or an unexpected answer from NATS
	CodeUnavailable      Code = "unavailable"            // 503: nothing was stored; retry later
	CodeUnknownOutcome   Code = "unknown_outcome"        // 503: may be stored; retry with the returned id
	CodeStorageFull      Code = "storage_full"           // 507: the log refuses writes
)

// httpStatus is the one place codes become HTTP statuses.
func httpStatus(c Code) int {
	switch c {
	case CodeInvalidJSON, CodeInvalidUser, CodeInvalidID, CodeInvalidData, CodeInvalidParameter, CodeInvalidTTL, CodeInvalidCollapse:
		return http.StatusBadRequest
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeNotFound:
		return http.StatusNotFound
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case CodePayloadTooLarge, CodeBatchTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeUnsupportedMedia:
		return http.StatusUnsupportedMediaType
	case CodeRateLimited:
		return http.StatusTooManyRequests
	case CodeUnavailable, CodeUnknownOutcome:
		return http.StatusServiceUnavailable
	case CodeStorageFull:
		return http.StatusInsufficientStorage
	default:
		return http.StatusInternalServerError
	}
}

// Error is what a client sees when a request (or one item of a batch)
// fails. Internal causes are wrapped in Err for logs; only Code, Message and
// ID cross the wire.
type Error struct {
	Code    Code
	Message string
	// ID is the notification's id when retrying with it is safe and useful:
	// set with CodeUnknownOutcome, so a caller who sent no id can still
	// retry without creating a second copy.
	ID  string
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON form of an Error: {"error":{"code","message"[,"id"]}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	ID      string `json:"id,omitempty"`
}

func (e *Error) body() errorBody {
	return errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, ID: e.ID}}
}

// appendError maps the log's errors to what the caller can do about them.
// id is the notification's id, returned with an unknown outcome so that the
// caller's retry lands on the same message.
func appendError(err error, id string) *Error {
	switch {
	case errors.Is(err, inbox.ErrUnknownOutcome):
		return &Error{Code: CodeUnknownOutcome, ID: id, Err: err,
			Message: "the notification may or may not have been stored; retry with the same id, which is safe"}
	case errors.Is(err, inbox.ErrStorageFull):
		return &Error{Code: CodeStorageFull, Err: err, Message: "the log refuses writes; nothing was stored"}
	case errors.Is(err, inbox.ErrUnavailable):
		return &Error{Code: CodeUnavailable, Err: err, Message: "the log is unavailable; nothing was stored, retry later"}
	default:
		// inbox documents only the three above; anything else is a
		// refusal we did not foresee (the notification was not stored:
		// Append stores nothing without an answer it can read).
		return &Error{Code: CodeInternal, Err: err, Message: "appending failed"}
	}
}
