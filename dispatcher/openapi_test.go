package dispatcher

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// The API's description, docs/openapi.yaml, is checked three ways: every
// response any test of this package receives from a dispatcher's public
// port is validated against it (specCheck, the test client's transport);
// the whole package's run must have seen every operation answer with every
// status the file lists, but those in unexercised; and the dispatcher
// serves exactly the routes the file describes.

var spec struct {
	once sync.Once
	v    validator.Validator
	doc  libopenapi.Document
	err  error

	ops map[string][]string // "POST /v1/notify" → its statuses

	mu   sync.Mutex
	seen map[string]bool // "POST /v1/notify 202"
}

// unexercised are the statuses the file documents that no test here
// produces, and why.
var unexercised = map[string]string{
	"POST /v1/notify 500":                       "a bug: only a recovered panic answers 500",
	"POST /v1/notify 507":                       "the store refusing writes: covered by the inbox tests, not through HTTP",
	"GET /v1/users/{user}/notifications 429":    "the rate limit is the same middleware as notify's",
	"DELETE /v1/users/{user}/notifications 429": "the rate limit is the same middleware as notify's",
	"GET /v1/users/{user}/notifications 503":    "a log that cannot be read: the outage tests cover notify",
	"DELETE /v1/users/{user}/notifications 503": "a log that cannot be purged: the outage tests cover notify",
	"POST /v1/notify/batch 503":                 "the batch's items carry their own errors; the request fails only with the log unready",
	"POST /v1/broadcast 503":                    "NATS down at the moment of a broadcast",
	"POST /v1/broadcast 413":                    "the payload limit is the same check as notify's",
	"GET /v1/cluster 400":                       "a bad ?user= is refused like any invalid user",
	"POST /v1/dev/token 415":                    "the same body reader as notify's",
	"POST /v1/notify/batch 415":                 "the same body reader as notify's",
	"POST /v1/broadcast 415":                    "the same body reader as notify's",
	"POST /v1/broadcast 429":                    "the rate limit is the same middleware as notify's",
	"GET /v1/users/{user}/notifications 401":    "the API key check is the same middleware as notify's",
}

func loadSpec() (validator.Validator, error) {
	spec.once.Do(func() {
		b, err := os.ReadFile("../docs/openapi.yaml")
		if err != nil {
			spec.err = err
			return
		}
		doc, err := libopenapi.NewDocument(b)
		if err != nil {
			spec.err = err
			return
		}
		v, errs := validator.NewValidator(doc)
		if len(errs) > 0 {
			spec.err = fmt.Errorf("building the validator: %v", errs)
			return
		}
		if ok, verrs := v.ValidateDocument(); !ok {
			spec.err = fmt.Errorf("docs/openapi.yaml is not valid OpenAPI: %v", verrs)
			return
		}
		m, err := doc.BuildV3Model()
		if err != nil {
			spec.err = err
			return
		}
		ops := map[string][]string{}
		for path, item := range m.Model.Paths.PathItems.FromOldest() {
			for method, op := range item.GetOperations().FromOldest() {
				var statuses []string
				for code := range op.Responses.Codes.KeysFromOldest() {
					statuses = append(statuses, code)
				}
				ops[strings.ToUpper(method)+" "+path] = statuses
			}
		}
		spec.v, spec.doc, spec.ops, spec.seen = v, doc, ops, map[string]bool{}
	})
	return spec.v, spec.err
}

// specOperations are the file's operations and their statuses:
// "POST /v1/notify" → ["202", "400", ...].
func specOperations(tb testing.TB) map[string][]string {
	tb.Helper()
	if _, err := loadSpec(); err != nil {
		tb.Fatal(err)
	}
	return spec.ops
}

// template is the file's path of a request path: the users route's
// pattern for a user's notifications.
func template(path string) string {
	if _, ok, err := userFromPath(path); ok || err != nil {
		return usersRoute
	}
	return path
}

// specCheck is the test client's transport: it validates each answer of
// the public port against docs/openapi.yaml and records which operation
// answered with which status.
type specCheck struct {
	tb   testing.TB
	base http.RoundTripper
	// public is the dispatcher's public address (host:port): the admin
	// listener is not described by the file.
	public string
}

func (s *specCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if err != nil || req.URL.Host != s.public || req.Method == http.MethodHead {
		return resp, err
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, nil
	}
	op := req.Method + " " + template(req.URL.EscapedPath())
	if _, ok := specOperations(s.tb)[op]; !ok {
		// Not an operation of the file: a route the dispatcher does not
		// serve, or a method it does not; they get 404 and 405, which
		// TestSpecCoversTheRoutes checks the router for.
		return resp, nil
	}
	v, _ := loadSpec()
	check := *resp
	check.Body = io.NopCloser(bytes.NewReader(body))
	if ok, errs := v.ValidateHttpResponse(req, &check); !ok {
		var msgs []string
		for _, e := range errs {
			msgs = append(msgs, e.Message+": "+e.Reason)
		}
		s.tb.Errorf("%s answered %d %s, which docs/openapi.yaml does not describe:\n  %s", op, resp.StatusCode, body, strings.Join(msgs, "\n  "))
	}
	spec.mu.Lock()
	spec.seen[op+" "+strconv.Itoa(resp.StatusCode)] = true
	spec.mu.Unlock()
	return resp, nil
}

// checkCoverage fails a whole run of the package (not one narrowed with
// -run) in which an operation never answered with a status the file
// lists, but for the unexercised ones.
func checkCoverage() error {
	if f := flag.Lookup("test.run"); f == nil || f.Value.String() != "" {
		return nil
	}
	if _, err := loadSpec(); err != nil {
		return err
	}
	var missing []string
	for op, statuses := range spec.ops {
		for _, st := range statuses {
			key := op + " " + st
			if _, ok := unexercised[key]; !ok && !spec.seen[key] {
				missing = append(missing, key)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("no test saw these answers docs/openapi.yaml lists (exercise them, or say why not in unexercised):\n  %s", strings.Join(missing, "\n  "))
	}
	return nil
}

// TestSpecCoversTheRoutes: every route and method a dev dispatcher serves
// is an operation of docs/openapi.yaml, and every operation is served.
func TestSpecCoversTheRoutes(t *testing.T) {
	e := newEnv(t)
	td := e.dispatcher(func(c *Config) { c.Dev, c.APIKeys = true, nil })
	rt := td.routes().(*router)
	ops := specOperations(t)
	served := map[string]bool{}
	for path, r := range rt.routes {
		if slices.Contains(td.cfg.PagePaths, path) {
			continue // the demo page (dev mode), HTML
		}
		for method := range r.methods {
			op := method + " " + path
			served[op] = true
			if _, ok := ops[op]; !ok {
				t.Errorf("the dispatcher serves %s, which docs/openapi.yaml lacks", op)
			}
		}
	}
	for op := range ops {
		if !served[op] {
			t.Errorf("docs/openapi.yaml describes %s, which the dispatcher does not serve", op)
		}
	}
}
