package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlerServesThePage(t *testing.T) {
	h := Handler()
	for path, want := range map[string]string{
		"/": "text/html", "/index.html": "text/html", "/app.js": "javascript",
		"/herald.js": "javascript", "/style.css": "text/css",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if path == "/index.html" && rec.Code == http.StatusMovedPermanently {
			continue // FileServer redirects /index.html to /
		}
		if rec.Code != http.StatusOK || !strings.Contains(rec.Header().Get("Content-Type"), want) || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q (%d bytes), want 200 %s", path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len(), want)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/web.go", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /web.go: %d, want 404: only the page's files are embedded", rec.Code)
	}
}
