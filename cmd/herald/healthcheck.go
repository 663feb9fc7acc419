package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode"
)

// healthcheckURLEnv names the URL herald healthcheck checks when none is
// given, so that one image serves gateways and dispatchers, whose ports
// differ: its HEALTHCHECK runs `herald healthcheck`, and a dispatcher's
// container sets this variable to its own /healthz.
const healthcheckURLEnv = "HERALD_HEALTHCHECK_URL"

// runHealthcheck GETs a URL and succeeds on a 2xx answer. It is the
// HEALTHCHECK of herald's container images, which are FROM scratch and so
// have no shell or curl. Docker reads its exit status: 0 healthy, 1 (every
// error) unhealthy; 2 is reserved by Docker, and nothing here exits with it.
// Its one line of output, kept in `docker inspect`'s health log, says what
// answered or why nothing did.
func runHealthcheck(ctx context.Context, args []string) error {
	fs := newFlagSet("healthcheck", "Takes one argument, a URL (flags may come before or after it), GETs it\n"+
		"and exits 0 if the answer is a 2xx, 1 otherwise, printing one line that says\n"+
		"why. https is verified against the system's CA certificates; redirects are\n"+
		"not followed. Without a URL argument, "+healthcheckURLEnv+" names it.")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	// A container's health check runs in the container's environment,
	// where HERALD_TIMEOUT may well mean something to the process checked.
	fs.envVar("timeout", "HERALD_HEALTHCHECK_TIMEOUT")
	// Some answers are 200 whatever the state: Consul's /v1/status/leader
	// answers "" when there is no leader, and an address when there is.
	contains := fs.String("body-contains", "", "also require the body's first 200 bytes to contain this")
	fs.envVar("body-contains", "HERALD_HEALTHCHECK_BODY_CONTAINS")
	// Flags may come before or after the URL: parse stops at the URL, and
	// parse again takes the flags after it (and the environment), refusing
	// anything else.
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	target := ""
	if len(rest) > 0 {
		target, rest = rest[0], rest[1:]
	}
	if err := parse(fs, rest); err != nil {
		return err
	}
	if target == "" {
		target = strings.TrimSpace(os.Getenv(healthcheckURLEnv))
	}
	if target == "" {
		return fmt.Errorf("no URL: give one, or set %s", healthcheckURLEnv)
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout %v: want a positive duration", *timeout)
	}
	line, err := checkHealth(ctx, target, *timeout, *contains)
	if err != nil {
		return err
	}
	fmt.Println(line)
	return nil
}

// checkHealth GETs target within timeout and returns one line saying what
// answered, or an error saying why the answer was not a 2xx. Redirects are
// not followed (a 3xx is not healthy), and no proxy is used: a health check
// asks the server itself. A non-empty contains must also be in the start of
// the body.
func checkHealth(ctx context.Context, target string, timeout time.Duration, contains string) (string, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("bad URL %q: want http://host[:port]/path or https://…", target)
	}
	client := &http.Client{
		// http.Transport's zero TLS config verifies against the system's
		// CA certificates (on Linux, /etc/ssl/certs/ca-certificates.crt,
		// or SSL_CERT_FILE).
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", target, err)
	}
	req.Header.Set("User-Agent", "herald-healthcheck/"+version)
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("%s: no answer within %v", u.Redacted(), timeout)
		}
		return "", fmt.Errorf("%s: %w", u.Redacted(), errors.Unwrap(err)) // unwrap the *url.Error, which repeats the URL
	}
	defer resp.Body.Close()
	// The start of the body says more than the status (Consul's
	// "No cluster leader", NATS's JetStream error); a body that does not
	// come within the timeout is left out, not an error, since the status
	// line has answered.
	body := make([]byte, 200)
	n, _ := io.ReadFull(resp.Body, body)
	line := fmt.Sprintf("%s: %s", u.Redacted(), resp.Status)
	if s := oneLine(body[:n]); s != "" {
		line += ": " + s
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", errors.New(line)
	}
	if !strings.Contains(string(body[:n]), contains) {
		return "", fmt.Errorf("%s (the body does not contain %q)", line, contains)
	}
	return line, nil
}

// oneLine makes the start of a body fit on one line of output: control
// characters (newlines among them) become spaces, runs of spaces one.
func oneLine(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "?"))
	return strings.Join(strings.Fields(s), " ")
}
