// Kubernetes' own storage conformance suite (k8s.io/apiserver/pkg/storage/testing, the RunTest*
// functions) through the tenant gateway. The etcd3 store, and the watch cache (cacher) in front of
// it, are built exactly as k8s.io/apiserver's own tests build them (etcd3/store_test.go and
// watcher_test.go, cacher/cacher_test.go and cacher_testing_utils_test.go, at the pinned v0.37.2),
// but instead of an embedded etcd server per test, the client dials the endpoints given in the
// environment. Each suite test runs as the subtests "direct" (core etcd, with the core's client
// certificate) and "gateway" (a tenant gateway, with the tenant's client certificate; the gateway
// adds the tenant's prefix itself), each path on a core etcd of its own.
//
// Run by test/e2e/storage-suite.test.ts, which starts core etcd and a tenant gateway and builds
// nothing: test/support/parts.ts builds this package ahead (`go test -c`, the part
// "storage-suite"). A path runs when its environment is given (below); without any, every test
// skips.
//
// Upstream gives each test a fresh etcd. Here one core etcd per path serves every test, one test
// at a time (upstream's few t.Parallel() around a setup are left out: the suite checks revisions
// that only its own writes may advance), and every key in it is deleted before each store is
// built: a fresh etcd but for its revision. The stores keep upstream's key prefixes ("" for the
// etcd3 store's tests, "/registry" for the watch cache's), which the suite's expectations name.
// The few tests that need an etcd never written to (their expectations name revisions, or they
// watch from revision 1) skip on any other; storage-suite.test.ts runs each of them alone on a
// fresh one.
//
// Compaction is always done on core etcd directly, by the suite's compaction function: a tenant
// may not compact (the gateway answers Compact UNIMPLEMENTED). Revisions are core etcd's on both
// paths.
//
// Upstream tests of these packages that are not suite tests (no storagetesting.Run* call) are
// implementation tests of the store and cache: they read unexported state (store.leaseManager,
// store.watcher, cacher.watchCache, ...) or wrap the store's client, and are not run here:
// etcd3's TestGetListStreamFallsBackToPaginated, TestGetListStreamMultiChunk, TestListMetrics,
// TestPrefix, Test_growSlice, TestLeaseMaxObjectCount, TestPrepareKey, TestInvalidKeys,
// TestGetCurrentResourceVersion, TestPrefixGetKeys, TestPrefixStats, TestWatchErrorIncorrectConfiguration,
// TestTooLargeResourceVersionErrorForWatchList, TestWatchChanSync*, TestWatchWithShardSelector;
// cacher's TestMarkConsistent and cacher_whitebox_test.go (a fake storage, no etcd).
package storage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/grpclog"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/storage"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/utils/clock"
)

// The environment storage-suite.test.ts gives, for <WAY> = DIRECT (core etcd, for the direct
// path), GATEWAY (the tenant gateway) and GATEWAY_CORE (the core etcd behind it).
const (
	envEndpoints  = "STORAGE_SUITE_%s_ENDPOINTS"   // comma-separated https:// URLs
	envCA         = "STORAGE_SUITE_%s_CA"          // CA file that signed the server's certificate
	envCert       = "STORAGE_SUITE_%s_CERT"        // client certificate file
	envKey        = "STORAGE_SUITE_%s_KEY"         // client key file
	envServerName = "STORAGE_SUITE_%s_SERVER_NAME" // optional: the name the server's certificate has
	// The --watch-progress-notify-interval core etcd runs with. Upstream's ProgressNotify and
	// WatchDispatchBookmarkEvents (etcd3) start their etcd with 1s, every other test with etcd's
	// default (10m); those two skip unless it is 1s.
	envProgressNotifyInterval = "STORAGE_SUITE_PROGRESS_NOTIFY_INTERVAL"
)

// A path to core etcd: directly, or through the tenant gateway.
type backend struct {
	name      string
	endpoints []string
	tls       *tls.Config
	// The core etcd this path reaches, with the core's client certificate: the suite's
	// compaction runs there, and the keys are deleted there before each store is built.
	core *backend
}

var (
	// The paths whose environment is given, in order.
	paths []*backend
	// Why the suite does not run: no path's environment is given, or one is unusable.
	unconfigured string
	// Why every test fails: a path is not what the suite needs.
	broken string
)

func TestMain(m *testing.M) {
	// As the upstream packages do (etcd3/store_test.go's init): gRPC's logs are noise here.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
	if err := loadPaths(); err != nil {
		unconfigured = err.Error()
	} else if len(paths) == 0 {
		unconfigured = fmt.Sprintf("neither %s nor %s is set: test/e2e/storage-suite.test.ts runs this suite", fmt.Sprintf(envEndpoints, "DIRECT"), fmt.Sprintf(envEndpoints, "GATEWAY"))
	}
	for _, b := range paths {
		if err := checkRequestWatchProgress(b); err != nil {
			broken = err.Error()
		}
	}
	os.Exit(m.Run())
}

// checkRequestWatchProgress does what cacher_whitebox_test.go's forceRequestWatchProgressSupport
// does: it waits until the storage layer knows that b's etcd answers watch progress requests. The
// storage layer asks once per endpoint and process (etcdfeature.DefaultFeatureSupportChecker), in
// the background, with the client of the first store built on that endpoint; a test that ends, and
// closes that client, before the answer leaves it unknown, that is unsupported, for the rest of the
// run (consistent reads then bypass the watch cache, and WatchList fails). Upstream's tests each
// have an etcd, and so an endpoint, of their own.
func checkRequestWatchProgress(b *backend) error {
	client, err := clientv3.New(clientv3.Config{TLS: b.tls.Clone(), Endpoints: b.endpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("%s: %w", b.name, err)
	}
	defer func() { _ = client.Close() }()
	etcdfeature.DefaultFeatureSupportChecker.CheckClient(client.Ctx(), client, storage.RequestWatchProgress)
	err = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, wait.ForeverTestTimeout, true, func(context.Context) (bool, error) {
		return etcdfeature.DefaultFeatureSupportChecker.Supports(storage.RequestWatchProgress), nil
	})
	if err != nil {
		return fmt.Errorf("the storage layer did not find that etcd answers watch progress requests through the %s path within %v", b.name, wait.ForeverTestTimeout)
	}
	return nil
}

func loadPaths() error {
	if os.Getenv(fmt.Sprintf(envEndpoints, "DIRECT")) != "" {
		direct, err := loadBackend("direct", "DIRECT")
		if err != nil {
			return err
		}
		direct.core = direct
		paths = append(paths, direct)
	}
	if os.Getenv(fmt.Sprintf(envEndpoints, "GATEWAY")) != "" {
		gateway, err := loadBackend("gateway", "GATEWAY")
		if err != nil {
			return err
		}
		if gateway.core, err = loadBackend("gateway's core", "GATEWAY_CORE"); err != nil {
			return err
		}
		paths = append(paths, gateway)
	}
	return nil
}

func loadBackend(name, way string) (*backend, error) {
	get := func(format string) string { return os.Getenv(fmt.Sprintf(format, way)) }
	endpoints := get(envEndpoints)
	if endpoints == "" {
		return nil, fmt.Errorf("%s is not set", fmt.Sprintf(envEndpoints, way))
	}
	ca, err := os.ReadFile(get(envCA))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fmt.Sprintf(envCA, way), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s holds no PEM certificate", get(envCA))
	}
	cert, err := tls.LoadX509KeyPair(get(envCert), get(envKey))
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", fmt.Sprintf(envCert, way), fmt.Sprintf(envKey, way), err)
	}
	return &backend{
		name:      name,
		endpoints: strings.Split(endpoints, ","),
		tls:       &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: get(envServerName), MinVersion: tls.VersionTLS12},
	}, nil
}

// bothPaths runs a suite test as the subtests "direct" then "gateway" (those whose environment is
// given), each with its own store.
func bothPaths(t *testing.T, run func(t *testing.T, b *backend)) {
	t.Helper()
	if unconfigured != "" {
		t.Skip(unconfigured)
	}
	if broken != "" {
		t.Fatal(broken)
	}
	for _, b := range paths {
		t.Run(b.name, func(t *testing.T) { run(t, b) })
	}
}

// notRun lists a suite test that this package does not run, with the reason, as a skipped subtest.
func notRun(t *testing.T, name, reason string) {
	t.Helper()
	t.Run(name, func(t *testing.T) { t.Skip("not run: " + reason) })
}

// requireFreshEtcd skips a test, unless b's core etcd has never been written to (revision 1).
// Called before the test's store is built.
func requireFreshEtcd(t *testing.T, b *backend, why string) {
	t.Helper()
	core := newCoreClient(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := core.Get(ctx, "fresh?")
	if err != nil {
		t.Fatalf("reading core etcd's revision: %v", err)
	}
	if resp.Header.Revision != 1 {
		t.Skipf("needs an etcd never written to (%s); core etcd is at revision %d: storage-suite.test.ts runs it alone on a fresh one", why, resp.Header.Revision)
	}
}

// newClient is testserver.RunEtcd's client (etcd3/testserver/test_server.go), dialing b: the same
// configuration and the same recorders around KV and the Kubernetes interface.
func newClient(t testing.TB, b *backend) *kubernetes.Client {
	t.Helper()
	client, err := kubernetes.New(clientv3.Config{
		TLS:         b.tls.Clone(),
		Endpoints:   b.endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)).Named("etcd-client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	kubernetesRecorder := storagetesting.NewKubernetesRecorder(client.Kubernetes)
	client.KV = storagetesting.NewKVRecorder(client.KV, kubernetesRecorder)
	client.Kubernetes = kubernetesRecorder
	return client
}

// newCoreClient is a client of b's core etcd, with the core's client certificate: what the
// suite's compaction uses, on both paths.
func newCoreClient(t testing.TB, b *backend) *clientv3.Client {
	t.Helper()
	client, err := clientv3.New(clientv3.Config{
		TLS:         b.core.tls.Clone(),
		Endpoints:   b.core.endpoints,
		DialTimeout: 10 * time.Second,
		Logger:      zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)).Named("core-etcd-client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// freshEtcd deletes every key of core etcd (the tenant's included), so that the next test finds
// it as upstream's tests find theirs: empty. In particular without compact_rev_key, whose version
// etcd3.Compact, the suite's compaction, expects to be 0 (otherwise it silently compacts nothing).
// Called before a store is built.
func freshEtcd(t testing.TB, core *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := core.Delete(ctx, "\x00", clientv3.WithFromKey()); err != nil {
		t.Fatalf("deleting every key of core etcd: %v", err)
	}
}

// suiteContext is the context the tests get. Upstream's is context.Background(); this one ends
// after wait.ForeverTestTimeout, so that a wait that never ends fails the test instead of
// hanging the run.
func suiteContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait.ForeverTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// compactionObservedWithin bounds the wait of the suite's compaction functions for the store to
// observe the compaction (upstream waits on the test's context, 30 s here): the store's compactor
// reads compact_rev_key a second after the store is built and then watches it, so directly on core
// etcd it observes a compaction within about a second.
const compactionObservedWithin = 5 * time.Second

// swappableTransformer is how a transformer is replaced here: upstream's storeWithPrefixTransformer
// and storeWithTransformerOverride assign the unexported fields store.transformer and
// store.watcher.transformer; the store and its watcher here hold this one transformer, and its
// delegate is replaced instead, with the same effect on both.
type swappableTransformer struct {
	mu      sync.RWMutex
	current value.Transformer
}

func newSwappableTransformer(t value.Transformer) *swappableTransformer {
	return &swappableTransformer{current: t}
}

func (s *swappableTransformer) get() value.Transformer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current
}

func (s *swappableTransformer) set(t value.Transformer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.current = t
}

func (s *swappableTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swappableTransformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// triggerableClock is clock.RealClock, except that the cacher's compactor timer (its poll period,
// cacher/compactor.go's compactorPollPeriod) can also be fired at once. Upstream's compactStore
// calls the unexported compactor.compactIfNeeded() itself; here the compactor's own loop calls it.
type triggerableClock struct {
	clock.RealClock
	mu     sync.Mutex
	timers []*triggerableTimer
}

const compactorPollPeriod = 15 * time.Second

func (c *triggerableClock) NewTimer(d time.Duration) clock.Timer {
	if d != compactorPollPeriod {
		return c.RealClock.NewTimer(d)
	}
	timer := &triggerableTimer{c: make(chan time.Time, 1)}
	timer.Reset(d)
	c.mu.Lock()
	c.timers = append(c.timers, timer)
	c.mu.Unlock()
	return timer
}

// fire fires every compactor timer made so far.
func (c *triggerableClock) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, timer := range c.timers {
		timer.fire()
	}
}

type triggerableTimer struct {
	mu    sync.Mutex
	c     chan time.Time
	timer *time.Timer
}

func (t *triggerableTimer) C() <-chan time.Time { return t.c }

func (t *triggerableTimer) fire() {
	select {
	case t.c <- time.Now():
	default:
	}
}

func (t *triggerableTimer) Stop() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.timer != nil && t.timer.Stop()
}

func (t *triggerableTimer) Reset(d time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	active := t.timer != nil && t.timer.Stop()
	t.timer = time.AfterFunc(d, t.fire)
	return active
}
