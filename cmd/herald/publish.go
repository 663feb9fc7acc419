package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/heraldpush/herald/dispatcher/client"
	"github.com/heraldpush/herald/gateway/token"
)

// runNotify is `herald notify`: one notification, for a user or a list,
// through dispatcher/client, so it is retried as the API allows.
func runNotify(ctx context.Context, args []string) error {
	fs := newFlagSet("notify", "Send a notification through the dispatchers and print the answer as JSON. Retries (with the same id) on unknown outcomes, 503s, 429s and dead dispatchers.")
	dispatchers := fs.String("dispatchers", "http://127.0.0.1:8080", "comma-separated dispatcher base URLs, tried in turn")
	apiKey := fs.String("api-key", "", "API key; without one, a dev dispatcher's /v1/dev/config is asked")
	apiKeyFile := fs.String("api-key-file", "", "file holding the API key, instead of --api-key")
	user := fs.String("user", "", "the user to notify")
	users := fs.String("users", "", "comma-separated users to notify instead (a fan-out, up to 1000)")
	data := fs.String("data", "", `the notification's data: any JSON value except null, e.g. '{"text":"hi"}' (required)`)
	id := fs.String("id", "", "idempotency id (default: a random one, printed in the answer)")
	wait := fs.Duration("wait", 0, "wait up to this long for a socket of the user to acknowledge it (one user only)")
	ttl := fs.Duration("ttl", 0, "neither deliver nor replay it after this long (whole seconds; 0: as long as the log keeps it)")
	collapse := fs.String("collapse", "", "collapse key: a device that has not yet received an older notification with this key gets only the newest")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *data == "" || !json.Valid([]byte(*data)):
		return errors.New("--data must be a JSON value, e.g. '{\"text\":\"hi\"}'")
	case (*user == "") == (*users == ""):
		return errors.New("give --user or --users")
	case *wait > 0 && *users != "":
		return errors.New("--wait waits for one user: not with --users")
	case *ttl < 0 || *ttl%time.Second != 0:
		return errors.New("--ttl must be whole seconds, e.g. 30s or 10m")
	}
	urls := splitList(*dispatchers)
	if len(urls) == 0 {
		return errors.New("--dispatchers is empty")
	}
	key, err := valueOrFile("api-key", *apiKey, *apiKeyFile)
	if err != nil {
		return err
	}
	if key == "" {
		if key, err = askDevAPIKey(ctx, urls[0]); err != nil {
			return err
		}
	}
	c, err := client.New(client.Config{URLs: urls, APIKey: key})
	if err != nil {
		return err
	}
	n := client.Notification{User: *user, ID: *id, Data: json.RawMessage(*data), TTL: int(*ttl / time.Second), Collapse: *collapse}
	var out any
	switch {
	case *users != "":
		out, err = c.NotifyMany(ctx, splitList(*users), n)
	case *wait > 0:
		out, err = c.NotifyAndWait(ctx, n, *wait)
	default:
		out, err = c.Notify(ctx, n)
	}
	if err != nil {
		return err
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// askDevAPIKey asks a dev dispatcher for its API key.
func askDevAPIKey(ctx context.Context, base string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/dev/config", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("no --api-key, and asking %s for a dev one: %w", base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var cfg struct {
		APIKey string `json:"api_key"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &cfg) != nil || cfg.APIKey == "" {
		return "", fmt.Errorf("no --api-key (HERALD_API_KEY), and %s is not a dev dispatcher (%s)", base, resp.Status)
	}
	return cfg.APIKey, nil
}

// runToken is `herald token`: a user token signed with the first of the
// token secrets, for a backend's scripts and for trying herald out.
func runToken(ctx context.Context, args []string) error {
	fs := newFlagSet("token", "Print a user token (JWT HS256, sub = the user) signed with the first of the token secrets, as gateways verify it.")
	user := fs.String("user", "", "the user (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	secrets := fs.String("token-secrets", "", "comma-separated token secrets; the first signs")
	secretsFile := fs.String("token-secrets-file", "", "file holding the token secrets, instead of --token-secrets")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("--user is required")
	}
	list, err := splitListOrFile("token-secrets", *secrets, *secretsFile)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return errors.New("no --token-secrets (HERALD_TOKEN_SECRETS)")
	}
	tok, err := token.Sign([]byte(list[0]), *user, *ttl)
	if err != nil {
		return err
	}
	fmt.Println(tok)
	return nil
}
