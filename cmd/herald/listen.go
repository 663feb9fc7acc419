package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/heraldpush/herald/gateway/client"
	"github.com/heraldpush/herald/gateway/token"
)

// runListen connects as a user and prints what arrives: a way to watch
// herald deliver from a terminal.
func runListen(ctx context.Context, args []string) error {
	fs := newFlagSet("listen", "Connect as a user through a dispatcher and print every notification, gap and broadcast as a JSON line.")
	dispatcherURL := fs.String("dispatcher", "http://127.0.0.1:8080", "dispatcher base URL")
	user := fs.String("user", "", "user ID (required)")
	secret := fs.String("token-secret", "", "secret to sign the user's token with; without one, a dev dispatcher's /v1/dev/token is asked")
	since := fs.Uint64("since", 0, "resume after this seq (0: the whole retained log)")
	epoch := fs.String("epoch", "", "the epoch of --since")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user == "" {
		return errors.New("--user is required")
	}
	tok := func(ctx context.Context) (string, error) {
		if *secret != "" {
			return token.Sign([]byte(*secret), *user, time.Hour)
		}
		return devToken(ctx, *dispatcherURL, *user)
	}
	enc := json.NewEncoder(os.Stdout)
	c, err := client.New(client.Config{
		Dispatcher: *dispatcherURL, Token: tok, Since: *since, Epoch: *epoch,
		OnEvent: func(e client.Event) {
			switch e.Kind {
			case client.EventStatus:
				if e.Status.Connected {
					fmt.Fprintf(os.Stderr, "connected to %s (%s)\n", e.Status.Gateway, e.Status.URL)
				} else {
					fmt.Fprintf(os.Stderr, "disconnected (close %d, %v): reconnecting in %v\n", e.Status.CloseCode, e.Status.Err, e.Status.Backoff.Round(time.Millisecond))
				}
			default:
				enc.Encode(e.Frame)
			}
		},
	})
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// devToken asks a dev-mode dispatcher for a user token.
func devToken(ctx context.Context, base, user string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user": user})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/dev/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("dev token: %s: %s (is the dispatcher in --dev mode? else pass --token-secret)", resp.Status, b)
	}
	var t struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &t); err != nil || t.Token == "" {
		return "", fmt.Errorf("dev token: bad answer %q", b)
	}
	return t.Token, nil
}
