package gateway_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestClientDependsOnNoServerLibraries: the Go client, which applications
// import, pulls in neither NATS nor Consul: the wire contract it shares
// with the gateway depends on the standard library only.
func TestClientDependsOnNoServerLibraries(t *testing.T) {
	for _, pkg := range []string{"github.com/heraldpush/herald/gateway/client", "github.com/heraldpush/herald/gateway/wire"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if strings.Contains(dep, "nats-io") || strings.Contains(dep, "hashicorp") {
				t.Errorf("%s depends on %s", pkg, dep)
			}
		}
	}
}

// TestCloseCodesChosenInOneFile: every close the gateway sends is chosen
// in closes.go; no other file of the package names a close code, as a
// wire.Close* constant or as a number.
func TestCloseCodesChosenInOneFile(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	seen := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var what string
			switch n := n.(type) {
			case *ast.SelectorExpr:
				x, ok := n.X.(*ast.Ident)
				switch {
				case !ok:
				case x.Name == "wire" && strings.HasPrefix(n.Sel.Name, "Close") && n.Sel.Name != "Close",
					x.Name == "websocket" && strings.HasPrefix(n.Sel.Name, "Status") && n.Sel.Name != "StatusCode":
					what = x.Name + "." + n.Sel.Name
				}
			case *ast.BasicLit:
				// herald's codes, and the RFC 6455 ones it uses (1000 and
				// 1001 are too common as plain numbers to tell apart).
				if v, err := strconv.Atoi(n.Value); n.Kind == token.INT && err == nil && (v >= 4000 && v <= 4015 || v >= 1008 && v <= 1014) {
					what = n.Value
				}
			}
			if what == "" {
				return true
			}
			seen++
			if name != "closes.go" {
				t.Errorf("%s names the close code %s: closes go in closes.go", fset.Position(n.Pos()), what)
			}
			return true
		})
	}
	if seen == 0 {
		t.Fatal("no close codes found at all: the test reads the wrong files")
	}
}
