// Package apiserver is the agent's REST API: HTTP/JSON over a unix socket
// (--socket, mode 0660). It owns no routes of its own beyond /v1/healthz,
// /v1/config and /statedb/: every cell that answers requests provides Routes
// into the "api-routes" group, so a custom agent without a cell simply has
// no such routes.
//
// Try it: curl --unix-socket /var/run/membrane/membrane.sock http://x/v1/healthz
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/cilium/hive/cell"
	"github.com/cilium/statedb"
	"github.com/spf13/pflag"
	"golang.org/x/net/netutil"

	"github.com/membrane-net/membrane/metrics"
)

// Config of the API server.
type Config struct {
	Socket string
}

func (def Config) Flags(fs *pflag.FlagSet) {
	fs.String("socket", def.Socket, "Unix socket the agent's API listens on (created mode 0660, parent directory created)")
}

// DefaultConfig listens on the standard socket.
var DefaultConfig = Config{Socket: "/var/run/membrane/membrane.sock"}

// Route is one method+path pattern (net/http ServeMux syntax, e.g.
// "PUT /v1/endpoint/{id}") and its handler.
type Route struct {
	Pattern string
	Handler http.Handler
}

// RoutesOut lets a constructor provide several routes into the group.
type RoutesOut struct {
	cell.Out
	Routes []Route `group:"api-routes,flatten"`
}

// Cell serves the API.
var Cell = cell.Module(
	"api-server",
	"REST API over a unix socket",

	cell.Config(DefaultConfig),
	cell.Provide(newServer),
	cell.Invoke(func(*Server) {}),
)

// Server is the running API server.
type Server struct {
	Patterns []string // every served pattern, sorted (the OpenAPI test reads it)
}

type params struct {
	cell.In

	Lifecycle cell.Lifecycle
	Log       *slog.Logger
	Config    Config
	DB        *statedb.DB
	Routes    []Route `group:"api-routes"`
}

// NewMux registers routes on a new ServeMux; two routes with the same or
// conflicting patterns are an error naming the pattern. Tests of a cell's
// routes use it to serve them exactly as the API server does.
func NewMux(routes []Route) (*http.ServeMux, error) {
	mux := http.NewServeMux()
	for _, r := range routes {
		if err := register(mux, r.Pattern, r.Handler); err != nil {
			return nil, err
		}
	}
	return mux, nil
}

// RoutesHandler is a cell that hands every route of the hive, on one
// handler as the API server would serve them, to set: for serving a
// hive's API without the socket (tests of a cell's routes).
func RoutesHandler(set func(http.Handler)) cell.Cell {
	return cell.Invoke(func(in struct {
		cell.In
		Routes []Route `group:"api-routes"`
	}) error {
		mux, err := NewMux(in.Routes)
		if err != nil {
			return err
		}
		set(mux)
		return nil
	})
}

func newServer(p params) (*Server, error) {
	mux, err := NewMux(p.Routes)
	if err != nil {
		return nil, err
	}
	s := &Server{}
	for _, r := range p.Routes {
		s.Patterns = append(s.Patterns, r.Pattern)
	}
	mux.Handle("/statedb/", http.StripPrefix("/statedb", p.DB.HTTPHandler()))
	mux.Handle("/", Handle(func(w http.ResponseWriter, r *http.Request) (any, int, error) {
		return nil, 0, Errorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path)
	}))
	sort.Strings(s.Patterns)

	srv := &http.Server{
		Handler:           logRequests(p.Log, readBodyFirst(mux)),
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
	}
	p.Lifecycle.Append(cell.Hook{
		OnStart: func(cell.HookContext) error {
			ln, err := Listen(p.Config.Socket, "API")
			if err != nil {
				return err
			}
			ln = netutil.LimitListener(ln, maxConns)
			p.Log.Info("API listening", "socket", p.Config.Socket)
			go func() {
				if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					p.Log.Error("API server failed", "error", err)
				}
			}()
			return nil
		},
		OnStop: func(ctx cell.HookContext) error {
			// Streaming /statedb/changes requests never end by themselves.
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
			os.Remove(p.Config.Socket)
			return nil
		},
	})
	return s, nil
}

func register(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("API route %q: %v", pattern, r)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// Listen creates a unix socket of the agent: parent directory created, a
// stale socket from a previous run removed, mode 0660 (the owner and its
// group). what names the socket in errors ("API", "shell", "metrics").
// The API, shell and metrics cells listen through it, so their sockets
// have the same rights.
func Listen(path, what string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%s socket directory: %w", what, err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s socket %s is in use: is another membrane-agent running?", what, path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s socket %s: %w", what, path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("%s socket %s: %w", what, path, err)
	}
	return ln, nil
}

func logRequests(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(rw, r)
		d := time.Since(start)
		log.Debug("API request", "method", r.Method, "path", r.URL.Path, "status", rw.code, "duration", d)
		// The mux set the pattern it matched on r: a label per route, never
		// per path (an endpoint ID in the path would be a series per pod).
		route := r.Pattern
		if route == "" || route == "/" {
			route = "other"
		}
		metrics.APIRequests.WithLabelValues(route, strconv.Itoa(rw.code)).Inc()
		metrics.APIRequestDuration.WithLabelValues(route).Observe(d.Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// Flush keeps streaming answers (statedb changes) working through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (read
// deadlines for the body, see readBodyFirst).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
