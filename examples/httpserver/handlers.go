package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cacheaside/cacheaside"
)

// writeTimeout bounds the UPDATE and the invalidation of a PUT, which run
// to the end even when the client hangs up: stopping between the two would
// leave the cache serving the old price until its TTL.
const writeTimeout = 5 * time.Second

// maxBody bounds the JSON body of a PUT.
const maxBody = 1 << 10

// server holds what the handlers need.
type server struct {
	cache  *cacheaside.Cache[int64, Product]
	store  *store
	logger *slog.Logger
}

// routes returns the service's handler, with metrics served at /metrics
// and the cache's inspector at /debug/cacheaside/.
func (s *server) routes(metrics, inspector http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /products/{id}", s.getProduct)
	mux.HandleFunc("PUT /products/{id}", s.putProduct)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /metrics", metrics)
	// The inspector shows cached values and invalidates keys: a real
	// service serves it, like /debug/pprof, on an internal port only.
	mux.Handle(inspectPath, http.StripPrefix(strings.TrimSuffix(inspectPath, "/"), inspector))
	return s.logRequests(mux)
}

// getProduct serves a product from the cache, which loads it from the
// database on a miss.
func (s *server) getProduct(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	p, err := s.cache.Get(r.Context(), id)
	switch {
	case errors.Is(err, cacheaside.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("product %d not found", id))
	case err != nil && r.Context().Err() != nil:
		// The client went away; the load goes on for other callers.
	case err != nil:
		s.logger.ErrorContext(r.Context(), "reading product", "id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	default:
		writeJSON(w, http.StatusOK, p)
	}
}

// putProduct sets a product's price in the database, then invalidates the
// cached copy: no GET that starts after the response sees the old price.
func (s *server) putProduct(w http.ResponseWriter, r *http.Request) {
	id, ok := productID(w, r)
	if !ok {
		return
	}
	var body struct {
		PriceCents *int64 `json:"price_cents"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.PriceCents == nil || *body.PriceCents < 0 {
		writeError(w, http.StatusBadRequest, `want a JSON body {"price_cents": N} with N >= 0`)
		return
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
	defer cancel()
	p, err := s.store.setPrice(ctx, id, *body.PriceCents)
	if errors.Is(err, cacheaside.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("product %d not found", id))
		return
	}
	if err != nil {
		s.logger.ErrorContext(ctx, "updating product", "id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	if err := s.cache.Invalidate(ctx, id); err != nil {
		// The price is saved, but other replicas may serve the old one
		// until the TTL: tell the client to retry the (idempotent) PUT.
		s.logger.ErrorContext(ctx, "invalidating product", "id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "price saved, but cached copies may be stale; retry the request")
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// healthz says the process is up and shows the state of the circuit
// breaker around Redis. It checks neither Redis nor PostgreSQL: the
// service keeps answering, more slowly, while Redis is down.
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{
		"status":        "ok",
		"redis_breaker": string(s.cache.Stats().Breaker),
	})
}

// productID parses the {id} path value, answering 400 when it is not an
// integer.
func productID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("product id %q is not an integer", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing to do
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// logRequests logs one line per request.
func (s *server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.logger.InfoContext(r.Context(), "request",
			"method", r.Method, "path", r.URL.Path, "status", rec.status, "took", time.Since(start).Round(time.Microsecond).String())
	})
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
