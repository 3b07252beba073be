// Command httpserver is a small product service: products live in
// PostgreSQL, reads go through a cacheaside cache in Redis, writes update
// the database and invalidate the cache, and the cache's metrics are served
// to Prometheus through OpenTelemetry.
//
//	go run . -addr 127.0.0.1:8080 -redis 127.0.0.1:6379 \
//	    -database-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//
// It creates and seeds the table cacheaside_http_products if it is missing
// and warms the 50 lowest product ids before it serves. Endpoints:
//
//	GET /products/{id}   the product as JSON; 404 when there is none
//	PUT /products/{id}   {"price_cents": N}: update, then invalidate
//	GET /healthz         liveness
//	GET /metrics         Prometheus metrics (cacheaside_*)
//
// SIGINT or SIGTERM stops it gracefully: the HTTP server drains, then the
// cache, the Redis client and the database pool are closed, in that order.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/inspect"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

const (
	cacheName       = "products" // the cache attribute of its metrics
	inspectPath     = "/debug/cacheaside/"
	warmProducts    = 50 // products warmed at start
	shutdownTimeout = 10 * time.Second
)

type config struct {
	addr, redisAddr, databaseURL string
	table                        string        // products table; created if missing
	warmTimeout                  time.Duration // bounds the warm-up at start
	redisTimeout                 time.Duration // WithRedisTimeout; 0 keeps the library's default (100ms)
}

func main() {
	cfg := config{table: defaultTable, warmTimeout: 10 * time.Second}
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "address to listen on")
	flag.StringVar(&cfg.redisAddr, "redis", "127.0.0.1:6379", "Redis address")
	flag.StringVar(&cfg.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	flag.Parse()
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, cfg, logger)
	stop()
	if err != nil {
		logger.Error("httpserver failed", "err", err)
		os.Exit(1)
	}
	logger.Info("stopped")
}

// run listens on cfg.addr and serves until ctx is done.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	return serve(ctx, ln, cfg, logger)
}

// serve connects to PostgreSQL and Redis, warms the cache, serves on ln
// until ctx is done, then shuts down gracefully. It closes ln.
func serve(ctx context.Context, ln net.Listener, cfg config, logger *slog.Logger) (err error) {
	a, err := newApp(ctx, cfg, logger)
	if err != nil {
		_ = ln.Close()
		return err
	}
	defer func() { err = errors.Join(err, a.close()) }()

	srv := &http.Server{
		Handler:           a.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("serving", "addr", ln.Addr().String())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx) // stops accepting, waits for requests in flight
	<-served                 // http.ErrServerClosed once Shutdown began
	if err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// app is the service's wiring: everything serve must close.
type app struct {
	handler http.Handler
	pool    *pgxpool.Pool
	rdb     *redis.Client
	meters  *sdkmetric.MeterProvider
	cache   *cacheaside.Cache[int64, Product]
	metrics metric.Registration
}

// newApp connects to PostgreSQL (which must be up) and Redis (which may
// not be: the cache then reads through to the database), migrates the
// products table and warms the cache for at most cfg.warmTimeout.
func newApp(ctx context.Context, cfg config, logger *slog.Logger) (_ *app, err error) {
	a := &app{}
	defer func() {
		if err != nil {
			_ = a.close()
		}
	}()
	if a.pool, err = pgxpool.New(ctx, cfg.databaseURL); err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	if err := a.pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	st := newStore(a.pool, cfg.table)
	if err := st.migrate(ctx); err != nil {
		return nil, err
	}
	a.rdb = redis.NewClient(&redis.Options{Addr: cfg.redisAddr, ContextTimeoutEnabled: true})

	// OpenTelemetry metrics, exported to a registry of our own that only
	// /metrics serves.
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("creating the prometheus exporter: %w", err)
	}
	a.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))

	// Redis command latency (a hook on the client), load latency (the
	// wrapped loader), and Gets by result with their latency (the Get hook).
	otelOpts := []cacheotel.Option{cacheotel.WithMeterProvider(a.meters), cacheotel.WithName(cacheName)}
	a.rdb.AddHook(cacheotel.RedisHook(otelOpts...))
	load := cacheotel.WrapLoader(st.product, otelOpts...)
	opts := []cacheaside.Option{
		cacheaside.WithGetHook(cacheotel.GetHook(otelOpts...)),
		cacheaside.WithPrefix("httpserver:"),
		cacheaside.WithTTL(10 * time.Minute),
		cacheaside.WithLogger(logger),
		cacheaside.WithWarmup(st.lowestIDs(warmProducts)),
		// While Redis is down every GET is a load: leave half of the
		// pool to the writes.
		cacheaside.WithMaxConcurrentLoads(max(1, int(a.pool.Config().MaxConns)/2)),
	}
	if cfg.redisTimeout > 0 {
		opts = append(opts, cacheaside.WithRedisTimeout(cfg.redisTimeout))
	}
	a.cache, err = cacheaside.New(a.rdb, load, opts...)
	if err != nil {
		return nil, err
	}
	// Only now the client's first call: the cache watches the connections
	// the client dials from New on (see WithRedisTimeout).
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		logger.Warn("Redis is unavailable; serving from PostgreSQL until it is back", "addr", cfg.redisAddr, "err", err)
	}
	a.metrics, err = cacheotel.RegisterMetrics(a.meters.Meter(cacheotel.ScopeName), cacheName, a.cache)
	if err != nil {
		return nil, err
	}

	wctx, cancel := context.WithTimeout(ctx, cfg.warmTimeout)
	defer cancel()
	if err := a.cache.Warm(wctx); err != nil {
		// A cold cache is slower, not wrong: serve anyway. Warm has
		// logged what it did.
		logger.Warn("warm-up incomplete", "err", err)
	}

	inspector, err := inspect.New(a.rdb, a.cache, nil)
	if err != nil {
		return nil, err
	}
	s := &server{cache: a.cache, store: st, logger: logger}
	a.handler = s.routes(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}), inspector)
	return a, nil
}

// close releases what newApp built, users before what they use: the
// metrics callback, the cache, the Redis client, the database pool, and
// last the meter provider. Each part may be missing after a failed newApp.
func (a *app) close() error {
	var errs []error
	if a.metrics != nil {
		errs = append(errs, a.metrics.Unregister())
	}
	if a.cache != nil {
		errs = append(errs, a.cache.Close())
	}
	if a.rdb != nil {
		errs = append(errs, a.rdb.Close())
	}
	if a.pool != nil {
		a.pool.Close()
	}
	if a.meters != nil {
		errs = append(errs, a.meters.Shutdown(context.Background()))
	}
	return errors.Join(errs...)
}
