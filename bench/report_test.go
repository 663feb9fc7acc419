package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportMergePrintJSON: a peer's figures land beside herald's by name,
// the table shows both and the ratio, and the JSON keeps them.
func TestReportMergePrintJSON(t *testing.T) {
	r := &Report{Scenario: "notify"}
	r.Add("notify: delivered", "/s", 3000)
	r.Add("notify: server CPU", "cores", 1.5)
	peer := &Report{}
	peer.Add("notify: server CPU", "cores", 0.5)
	peer.Note("a remark")
	r.Merge(peer, "centrifugo")
	if r.Figures[0].Peer != nil || r.Figures[1].Peer == nil || *r.Figures[1].Peer != 0.5 {
		t.Fatalf("merged figures %+v: want the peer's CPU beside herald's, nothing beside delivered", r.Figures)
	}
	var b strings.Builder
	r.Print(&b)
	if !strings.Contains(b.String(), "3.00") || !strings.Contains(b.String(), "centrifugo: a remark") {
		t.Errorf("table lacks the ratio 3.00 or the peer's note:\n%s", b.String())
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back Report
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &back); err != nil || back.Figures[1].Peer == nil || *back.Figures[1].Peer != 0.5 {
		t.Errorf("JSON round trip: %v, %+v", err, back.Figures)
	}
}
