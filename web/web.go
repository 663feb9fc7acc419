// Package web is herald's demo page and its browser client, herald.js,
// embedded so the one herald binary serves them (dispatchers in dev mode).
//
// herald.js is also meant to be copied: a dependency-free ES module that
// implements the same protocol and reconnect rules as the Go client.
package web

import (
	"embed"
	"net/http"
)

//go:embed index.html app.js style.css herald.js
var files embed.FS

// Paths are the URL paths the page answers.
var Paths = []string{"/", "/index.html", "/app.js", "/style.css", "/herald.js"}

// Handler serves the page. Files are revalidated on every load, so a new
// binary is picked up without a hard refresh.
func Handler() http.Handler {
	fs := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		fs.ServeHTTP(w, r)
	})
}
