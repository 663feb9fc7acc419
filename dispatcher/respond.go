package dispatcher

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
)

// writeJSON answers with v as JSON. Encoding our own response structs cannot
// fail; a failed write means the client left, which is not worth a log line.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"error":{"code":"internal","message":"encoding the response failed"}}`, http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers with err as an Error: its code decides the status.
// Server-side failures are logged with their cause; client mistakes are not
// (they would let any client fill the logs).
func (d *Dispatcher) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: CodeInternal, Message: "internal error", Err: err}
	}
	status := httpStatus(e.Code)
	if status >= 500 {
		d.log.LogAttrs(r.Context(), levelFor(e.Code), "request failed",
			slog.String("route", r.URL.Path), slog.String("code", string(e.Code)), slog.Any("error", e))
	}
	writeJSON(w, status, e.body())
}

// levelFor: an outage is a warning (it is expected, and other signals page
// someone); anything else at 5xx is a bug.
func levelFor(c Code) slog.Level {
	switch c {
	case CodeUnavailable, CodeUnknownOutcome, CodeStorageFull:
		return slog.LevelWarn
	}
	return slog.LevelError
}
