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
	redis := &Report{}
	redis.Add("notify: delivered", "/s", 4000)
	r.Merge(redis, "centrifugo+redis")
	if _, ok := r.Figures[0].Peers["centrifugo"]; ok || r.Figures[1].Peers["centrifugo"] != 0.5 || r.Figures[0].Peers["centrifugo+redis"] != 4000 {
		t.Fatalf("merged figures %+v: want each peer's figure beside herald's, in its own column, nothing where it measured nothing", r.Figures)
	}
	var b strings.Builder
	r.Print(&b)
	for _, want := range []string{"3.00", "0.75", "centrifugo: a remark", "centrifugo+redis"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q (a ratio, a column or the peer's note):\n%s", want, b.String())
		}
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	var back Report
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &back); err != nil || back.Figures[1].Peers["centrifugo"] != 0.5 || len(back.Peers) != 2 {
		t.Errorf("JSON round trip: %v, %+v", err, back.Figures)
	}
}
