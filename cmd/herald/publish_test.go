package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/heraldpush/herald/gateway/token"
)

// TestTokenCommand: herald token prints a token the gateways' verifier
// accepts for the user, signed with the first secret; without secrets it
// refuses.
func TestTokenCommand(t *testing.T) {
	first, second := strings.Repeat("a", 32), strings.Repeat("b", 32)
	out, err := exec.Command(heraldBin, "token", "--user", "team/alice", "--token-secrets", first+","+second).Output()
	if err != nil {
		t.Fatalf("herald token: %v", err)
	}
	v, err := token.NewVerifier([]byte(first))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(strings.TrimSpace(string(out)))
	if err != nil || claims.User != "team/alice" {
		t.Fatalf("the printed token: %+v, %v", claims, err)
	}
	cmd := exec.Command(heraldBin, "token", "--user", "alice")
	cmd.Env = []string{"HERALD_TOKEN_SECRETS="}
	if msg, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(msg), "token-secrets") {
		t.Fatalf("without secrets: %v %s", err, msg)
	}
}

// TestNotifyCommand: herald notify posts through dispatcher/client (an id
// on every notification, the dev API key when none is given, a fan-out for
// --users) and prints the answer; bad flags are refused before anything is
// sent.
func TestNotifyCommand(t *testing.T) {
	var (
		mu   sync.Mutex
		got  []map[string]any
		auth []string
	)
	d := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/dev/config" {
			io.WriteString(w, `{"api_key":"dev-key"}`)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		got, auth = append(got, body), append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"`+body["id"].(string)+`","seq":9,"gateway":"gw-1","status":"routed","duplicate":false}`)
	}))
	defer d.Close()
	out, err := exec.Command(heraldBin, "notify", "--dispatchers", d.URL, "--user", "alice", "--data", `{"text":"hi <b>"}`).Output()
	if err != nil {
		t.Fatalf("herald notify: %v", err)
	}
	var res struct {
		ID  string `json:"id"`
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(out, &res) != nil || res.Seq != 9 || res.ID == "" {
		t.Fatalf("printed %s", out)
	}
	if len(got) != 1 || got[0]["user"] != "alice" || got[0]["id"] != res.ID || auth[0] != "Bearer dev-key" {
		t.Fatalf("sent %v with %v", got, auth)
	}
	if data, _ := json.Marshal(got[0]["data"]); string(data) != `{"text":"hi \u003cb\u003e"}` {
		t.Fatalf("data sent: %s", data)
	}
	for _, bad := range [][]string{
		{"--user", "alice"}, {"--user", "alice", "--data", "{"}, {"--data", "1"},
		{"--user", "a", "--users", "b", "--data", "1"}, {"--users", "a,b", "--data", "1", "--wait", "1s"},
	} {
		if msg, err := exec.Command(heraldBin, append([]string{"notify", "--dispatchers", d.URL, "--api-key", "k"}, bad...)...).CombinedOutput(); err == nil {
			t.Errorf("herald notify %v succeeded: %s", bad, msg)
		}
	}
	if len(got) != 1 {
		t.Fatalf("refused commands sent %d requests", len(got)-1)
	}
}
