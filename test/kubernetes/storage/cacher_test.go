// The suite on the watch cache: every storagetesting.Run* call of k8s.io/apiserver v0.37.2's
// pkg/storage/cacher/cacher_test.go, in its order, with its arguments, through cacherSetup below
// (cacher_test.go's testSetupWithEtcdServer and cacher_testing_utils_test.go's etcd3 store, but
// dialing core etcd or the gateway).
package storage

import (
	"context"
	"fmt"
	"os"
	"path"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/apitesting"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	example2v1 "k8s.io/apiserver/pkg/apis/example2/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/tools/cache"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"
)

// cacher_testing_utils_test.go's scheme, codecs and codec.
var (
	cacherScheme        = runtime.NewScheme()
	cacherCodecs        = serializer.NewCodecFactory(cacherScheme)
	examplev1ProtoCodec runtime.Codec
)

func init() {
	metav1.AddToGroupVersion(cacherScheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(cacherScheme))
	utilruntime.Must(examplev1.AddToScheme(cacherScheme))
	utilruntime.Must(example2v1.AddToScheme(cacherScheme))
	utilruntime.Must(corev1.AddToScheme(cacherScheme))
	utilruntime.Must(metav1.AddMetaToScheme(cacherScheme))
	cacherScheme.AddUnversionedTypes(corev1.SchemeGroupVersion, &metav1.Status{})
	pb := protobuf.NewSerializer(cacherScheme, cacherScheme)
	examplev1ProtoCodec = cacherCodecs.CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
}

func TestCacher(t *testing.T) {
	t.Run("Create", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestCreate(e.ctx, t, e.delegator, checkCacherStorageInvariants)
		})
	})
	t.Run("CreateWithTTL", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestCreateWithTTL(e.ctx, t, e.delegator)
		})
	})
	t.Run("CreateWithKeyExist", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestCreateWithKeyExist(e.ctx, t, e.delegator)
		})
	})
	t.Run("Get", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestGet(e.ctx, t, e.delegator)
		})
	})
	t.Run("UnconditionalDelete", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestUnconditionalDelete(e.ctx, t, e.delegator)
		})
	})
	t.Run("ConditionalDelete", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestConditionalDelete(e.ctx, t, e.delegator)
		})
	})
	t.Run("DeleteWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestion(e.ctx, t, e.delegator)
		})
	})
	t.Run("DeleteWithSuggestionAndConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionAndConflict(e.ctx, t, e.delegator)
		})
	})
	t.Run("DeleteWithSuggestionOfDeletedObject", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(e.ctx, t, e.delegator)
		})
	})
	t.Run("ValidateDeletionWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestValidateDeletionWithSuggestion(e.ctx, t, e.delegator)
		})
	})
	t.Run("ValidateDeletionWithOnlySuggestionValid", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(e.ctx, t, e.delegator)
		})
	})
	t.Run("DeleteWithConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestDeleteWithConflict(e.ctx, t, e.delegator)
		})
	})
	t.Run("DeleteWithConflictAndMissingExpectedTransformOrDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			transformer := &testTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			e := cacherSetup(t, b, withCacherTransformer(transformer))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.delegator, transformer.setFailing)
		})
	})
	t.Run("DeleteWithConflictAndExpectedTransformError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			transformer := &testTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			e := cacherSetup(t, b, withCacherTransformer(transformer))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.delegator, transformer.setFailing)
		})
	})
	t.Run("DeleteWithConflictAndExpectedDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		// Decode errors cause a panic when they occur during tests. Disable for this particular
		// test since it is deliberately exercising a case where the stored bytes cannot be decoded.
		etcd3.TestOnlySetFatalOnDecodeError(t, false)
		bothPaths(t, func(t *testing.T, b *backend) {
			codec := &testCodec{Codec: apitesting.TestCodec(cacherCodecs, examplev1.SchemeGroupVersion)}
			e := cacherSetup(t, b, withCacherCodec(codec))
			// The etcd3 watcher's event goroutines can outlive the cacher's stop and decode one more
			// event after the test restored the panic on decode errors: the codec stops failing
			// first, so that such a late decode cannot panic the next test (seen once here,
			// directly on etcd, as "panic: synthetic error" in etcd3.decodeObj).
			t.Cleanup(func() { codec.setFailing(false) })
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.delegator, codec.setFailing)
		})
	})
	t.Run("DeleteWithSuggestionAndMissingExpectedTransformOrDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.delegator)
		})
	})
	t.Run("PreconditionalDeleteWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(e.ctx, t, e.delegator)
		})
	})
	t.Run("PreconditionalDeleteWithSuggestionPass", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(e.ctx, t, e.delegator)
		})
	})
	t.Run("ListPaging", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestListPaging(e.ctx, t, e.delegator)
		})
	})
	t.Run("Lists", func(t *testing.T) {
		for _, listFromCacheSnapshot := range []bool{true, false} {
			t.Run(fmt.Sprintf("ListFromCacheSnapshot=%v", listFromCacheSnapshot), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, listFromCacheSnapshot)
				// Upstream runs these three in parallel, each on an etcd of its own; on one
				// etcd they run one after the other (the suite checks revisions).
				t.Run("List", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						if !listFromCacheSnapshot {
							requireFreshEtcd(t, b, "without ListFromCacheSnapshot, RunTestList expects the watch cache's requests to etcd at revisions 2 to 8")
						}
						e := cacherSetup(t, b)
						storagetesting.RunTestList(e.ctx, t, e.delegator, compactStore(e), true, e.client.Kubernetes.(*storagetesting.KubernetesRecorder))
					})
				})
				t.Run("ConsistentList", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						e := cacherSetup(t, b)
						storagetesting.RunTestConsistentList(e.ctx, t, e.delegator, increaseRVFunc(e.client.Client), true, true, listFromCacheSnapshot)
					})
				})
				t.Run("GetListNonRecursive", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						e := cacherSetup(t, b)
						storagetesting.RunTestGetListNonRecursive(e.ctx, t, increaseRVFunc(e.client.Client), e.delegator)
					})
				})
			})
		}
	})
	t.Run("CompactRevision", func(t *testing.T) {
		// Test requires store to observe extenal changes to compaction revision, requiring dedicated watch on compact key which is enabled by ListFromCacheSnapshot.
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestCompactRevision(e.ctx, t, e.delegator, increaseRVFunc(e.client.Client), compactStore(e))
		})
	})
	t.Run("GetListRecursivePrefix", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestGetListRecursivePrefix(e.ctx, t, e.delegator)
		})
	})
	t.Run("ListContinuation", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestListContinuation(e.ctx, t, e.delegator, checkStorageCalls)
		})
	})
	t.Run("ListPaginationRareObject", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestListPaginationRareObject(e.ctx, t, e.delegator, checkStorageCalls)
		})
	})
	t.Run("ListContinuationWithFilter", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestListContinuationWithFilter(e.ctx, t, e.delegator, checkStorageCalls)
		})
	})
	notRun(t, "ListInconsistentContinuation", "empty upstream too: TODO(#109831)")
	notRun(t, "ListResourceVersionMatch", "empty upstream too: TODO(#109831)")
	t.Run("NamespaceScopedList", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b, withNodeNameAndNamespaceIndex)
			storagetesting.RunTestNamespaceScopedList(e.ctx, t, e.delegator)
		})
	})
	notRun(t, "GuaranteedUpdate", "empty upstream too: TODO(#109831)")
	t.Run("GuaranteedUpdateWithTTL", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithTTL(e.ctx, t, e.delegator)
		})
	})
	notRun(t, "GuaranteedUpdateChecksStoredData", "empty upstream too: TODO(#109831)")
	t.Run("GuaranteedUpdateWithConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithConflict(e.ctx, t, e.delegator)
		})
	})
	t.Run("GuaranteedUpdateWithSuggestionAndConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(e.ctx, t, e.delegator)
		})
	})
	notRun(t, "TransformationFailure", "empty upstream too: TODO(#109831)")
	t.Run("Stats", func(t *testing.T) {
		for _, sizeBasedListCostEstimate := range []bool{true, false} {
			t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeBasedListCostEstimate), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.SizeBasedListCostEstimate, sizeBasedListCostEstimate)
				bothPaths(t, func(t *testing.T, b *backend) {
					e := cacherSetup(t, b)
					storagetesting.RunTestStats(e.ctx, t, e.delegator, examplev1ProtoCodec, identity.NewEncryptCheckTransformer(), sizeBasedListCostEstimate)
				})
			})
		}
	})
	t.Run("KeySchema", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := cacherSetup(t, b)
			storagetesting.RunTestKeySchema(e.ctx, t, e.delegator)
		})
	})

	t.Run("Watch", func(t *testing.T) {
		t.Run("Watch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatch(e.ctx, t, e.delegator)
			})
		})
		notRun(t, "WatchFromZero", "its compaction function (cacher_testing_utils_test.go's compactWatch) rewrites the watch cache's unexported event history (watchCache.history, startIndex) under the cacher's locks")
		t.Run("DeleteTriggerWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestDeleteTriggerWatch(e.ctx, t, e.delegator)
			})
		})
		t.Run("WatchFromNonZero", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatchFromNonZero(e.ctx, t, e.delegator)
			})
		})
		t.Run("DelayedWatchDelivery", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestDelayedWatchDelivery(e.ctx, t, e.delegator)
			})
		})
		notRun(t, "WatchError", "empty upstream too: TODO(#109831)")
		notRun(t, "WatchContextCancel", "empty upstream too: TODO(#109831)")
		t.Run("WatcherTimeout", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatcherTimeout(e.ctx, t, e.delegator)
			})
		})
		t.Run("WatchDeleteEventObjectHaveLatestRV", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(e.ctx, t, e.delegator)
			})
		})
		t.Run("WatchInitializationSignal", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatchInitializationSignal(e.ctx, t, e.delegator)
			})
		})
		t.Run("ClusterScopedWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b, withClusterScopedKeyFunc, withNodeNameAndNamespaceIndex)
				storagetesting.RunTestClusterScopedWatch(e.ctx, t, e.delegator)
			})
		})
		t.Run("NamespaceScopedWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b, withNodeNameAndNamespaceIndex)
				storagetesting.RunTestNamespaceScopedWatch(e.ctx, t, e.delegator)
			})
		})
		t.Run("WatchDispatchBookmarkEvents", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestWatchDispatchBookmarkEvents(e.ctx, t, e.delegator, true)
			})
		})
		t.Run("WatchBookmarksWithCorrectResourceVersion", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion(e.ctx, t, e.delegator)
			})
		})
		t.Run("SendInitialEventsBackwardCompatibility", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunSendInitialEventsBackwardCompatibility(e.ctx, t, e.delegator)
			})
		})
		t.Run("WatchSemantics", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				requireFreshEtcd(t, b, "RunWatchSemantics watches from resourceVersion 1, which a watch cache started at a later revision does not hold")
				e := cacherSetup(t, b)
				storagetesting.RunWatchSemantics(context.TODO(), t, &createWrapper{CacheDelegator: e.delegator})
			})
		})
		t.Run("WatchSemanticInitialEventsExtended", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunWatchSemanticInitialEventsExtended(context.TODO(), t, &createWrapper{CacheDelegator: e.delegator})
			})
		})
		t.Run("WatchListMatchSingle", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := cacherSetup(t, b)
				storagetesting.RunWatchListMatchSingle(context.TODO(), t, &createWrapper{CacheDelegator: e.delegator})
			})
		})
	})
}

// ---------------------------------------------------------------------------------------------
// cacher_test.go's helpers
// ---------------------------------------------------------------------------------------------

// GetPodAttrs returns labels and fields of a given object for filtering purposes.
func GetPodAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*example.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod")
	}
	return labels.Set(pod.ObjectMeta.Labels), PodToSelectableFields(pod), nil
}

// PodToSelectableFields returns a field set that represents the object
func PodToSelectableFields(pod *example.Pod) fields.Set {
	podSpecificFieldsSet := make(fields.Set, 5)
	podSpecificFieldsSet["spec.nodeName"] = pod.Spec.NodeName
	podSpecificFieldsSet["spec.restartPolicy"] = string(pod.Spec.RestartPolicy)
	podSpecificFieldsSet["status.phase"] = string(pod.Status.Phase)
	return AddObjectMetaFieldsSet(podSpecificFieldsSet, &pod.ObjectMeta, true)
}

func AddObjectMetaFieldsSet(source fields.Set, objectMeta *metav1.ObjectMeta, hasNamespaceField bool) fields.Set {
	source["metadata.name"] = objectMeta.Name
	if hasNamespaceField {
		source["metadata.namespace"] = objectMeta.Namespace
	}
	return source
}

func checkCacherStorageInvariants(ctx context.Context, t *testing.T, key string) {
	// No-op function since cacher simply passes object creation to the underlying storage.
}

func checkStorageCalls(t *testing.T, pageSize, estimatedProcessedObjects uint64) {
	// No-op function for now, since cacher passes pagination calls to underlying storage.
}

// createWrapper is cacher_test.go's; cacher.newFunc, unexported, is the Config's NewFunc: newPod.
type createWrapper struct {
	*cacher.CacheDelegator
}

func (c *createWrapper) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.CacheDelegator.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		currentObj := newPod()
		err := c.CacheDelegator.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, currentObj)
		if err != nil {
			if storage.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		if !apiequality.Semantic.DeepEqual(currentObj, out) {
			return false, nil
		}
		return true, nil
	})
}

// compactStore is cacher_testing_utils_test.go's, its waits bounded (compactionObservedWithin).
// `client` is core etcd's on both paths, and
// c.storage.CompactRevision() is the etcd3 store's; c.cacher.compactor.compactIfNeeded(),
// unexported, is run by the compactor's own loop, its timer fired, and waited for through
// CacheDelegator.CompactRevision() (the compactor's revision).
func compactStore(e *cacherEnv) storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		versioner := storage.APIObjectVersioner{}
		rv, err := versioner.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var currentVersion int64
		currentVersion, _, _, err = etcd3.Compact(ctx, e.core, currentVersion, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, e.core, currentVersion, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		// Wait for compaction to be observed.
		if e.compactor {
			ctx, cancel := context.WithTimeout(ctx, compactionObservedWithin)
			defer cancel()
			for {
				select {
				case <-ctx.Done():
					t.Fatalf("the store did not observe the compaction at %d (its CompactRevision() is %d): %v", rv, e.storage.CompactRevision(), ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
				compactedRev := e.storage.CompactRevision()
				if compactedRev == int64(rv) {
					break
				}
			}
			for e.delegator.CompactRevision() != int64(rv) {
				e.clock.fire()
				select {
				case <-ctx.Done():
					t.Fatalf("the watch cache did not compact at %d (its CompactRevision() is %d): %v", rv, e.delegator.CompactRevision(), ctx.Err())
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------
// cacher_test.go's test setup, dialing b
// ---------------------------------------------------------------------------------------------

type cacherEnv struct {
	ctx       context.Context
	delegator *cacher.CacheDelegator
	// The store under the cacher (with the list errors upstream injects): the delegator's storage.
	storage storage.Interface
	// The store's client (core etcd's or the gateway's) and core etcd's, which compacts.
	client *kubernetes.Client
	core   *clientv3.Client
	clock  *triggerableClock
	// Whether the cacher has a compactor (ListFromCacheSnapshot when it was built).
	compactor bool
}

type cacherSetupOptions struct {
	resourcePrefix string
	keyFunc        func(runtime.Object) (string, error)
	indexerFuncs   map[string]storage.IndexerFunc
	indexers       cache.Indexers
	codec          runtime.Codec
	transformer    value.Transformer
}

type cacherSetupOption func(*cacherSetupOptions)

func withCacherDefaults(options *cacherSetupOptions) {
	prefix := "/pods/"

	options.resourcePrefix = prefix
	options.keyFunc = func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc(prefix, obj) }
	options.codec = examplev1ProtoCodec
	options.transformer = identity.NewEncryptCheckTransformer()
}

func withClusterScopedKeyFunc(options *cacherSetupOptions) {
	options.keyFunc = func(obj runtime.Object) (string, error) {
		return storage.NoNamespaceKeyFunc(options.resourcePrefix, obj)
	}
}

// mirror indexer configuration from pkg/registry/core/pod/strategy.go
func withNodeNameAndNamespaceIndex(options *cacherSetupOptions) {
	options.indexerFuncs = map[string]storage.IndexerFunc{
		"spec.nodeName": func(obj runtime.Object) string {
			pod, ok := obj.(*example.Pod)
			if !ok {
				return ""
			}
			return pod.Spec.NodeName
		},
	}
	options.indexers = map[string]cache.IndexFunc{
		"f:spec.nodeName": func(obj interface{}) ([]string, error) {
			pod := obj.(*example.Pod)
			return []string{pod.Spec.NodeName}, nil
		},
		"f:metadata.namespace": func(obj interface{}) ([]string, error) {
			pod := obj.(*example.Pod)
			return []string{pod.ObjectMeta.Namespace}, nil
		},
	}
}

func withCacherCodec(codec runtime.Codec) cacherSetupOption {
	return func(options *cacherSetupOptions) {
		options.codec = codec
	}
}

func withCacherTransformer(transformer value.Transformer) cacherSetupOption {
	return func(options *cacherSetupOptions) {
		options.transformer = transformer
	}
}

// pathPrefix is etcd3/testing's PathPrefix (that package starts embedded etcd servers, whose
// module this one does not need): the prefix set via ETCD_PREFIX, "/registry" unless set.
func pathPrefix() string {
	pref := os.Getenv("ETCD_PREFIX")
	if pref == "" {
		pref = "registry"
	}
	return path.Join("/", pref)
}

// newEtcdTestStorageWithOptions is cacher_testing_utils_test.go's, on client.
func newEtcdTestStorageWithOptions(t testing.TB, client *kubernetes.Client, prefix string, codec runtime.Codec, transformer value.Transformer) storage.Interface {
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	storage, err := etcd3.New(
		client,
		compactor,
		codec,
		newPod,
		newPodList,
		prefix,
		"/pods/",
		schema.GroupResource{Resource: "pods"},
		transformer,
		etcd3.NewDefaultLeaseManagerConfig(),
		etcd3.NewDefaultDecoder(codec, versioner),
		versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(storage.Close)
	return storage
}

// cacherSetup is cacher_test.go's testSetupWithEtcdServer, with the cacher's teardown registered
// as the test's cleanup. The cacher's clock is clock.RealClock, as upstream's, with the
// compactor's timer made triggerable (compactStore).
func cacherSetup(t *testing.T, b *backend, opts ...cacherSetupOption) *cacherEnv {
	t.Helper()
	setupOpts := cacherSetupOptions{}
	opts = append([]cacherSetupOption{withCacherDefaults}, opts...)
	for _, opt := range opts {
		opt(&setupOpts)
	}

	core := newCoreClient(t, b)
	freshEtcd(t, core)
	client := newClient(t, b)
	etcdStorage := newEtcdTestStorageWithOptions(t, client, pathPrefix(), setupOpts.codec, setupOpts.transformer)
	// Inject one list error to make sure we test the relist case.
	listErrors := 1
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		// The WatchListClient feature changes the reflector to use WATCH
		// instead of LIST, therefore we don't expect any errors
		listErrors = 0
	}
	wrappedStorage := &storagetesting.StorageInjectingListErrors{
		Interface: etcdStorage,
		Errors:    listErrors,
	}

	clk := &triggerableClock{}
	config := cacher.Config{
		Storage:             wrappedStorage,
		Versioner:           storage.APIObjectVersioner{},
		GroupResource:       schema.GroupResource{Resource: "pods"},
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
		ResourcePrefix:      setupOpts.resourcePrefix,
		KeyFunc:             setupOpts.keyFunc,
		GetAttrsFunc:        GetPodAttrs,
		NewFunc:             newPod,
		NewListFunc:         newPodList,
		IndexerFuncs:        setupOpts.indexerFuncs,
		Indexers:            &setupOpts.indexers,
		Codec:               setupOpts.codec,
		Clock:               clk,
	}
	hasCompactor := utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot)
	c, err := cacher.NewCacherFromConfig(config)
	if err != nil {
		t.Fatalf("Failed to initialize cacher: %v", err)
	}
	ctx := suiteContext(t)

	// Since some tests depend on the fact that GetList shouldn't fail,
	// we wait until the error from the underlying storage is consumed.
	if err := wait.PollInfinite(100*time.Millisecond, wrappedStorage.ErrorsConsumed); err != nil {
		t.Fatalf("Failed to inject list errors: %v", err)
	}

	// The tests assume that Get/GetList/Watch calls shouldn't fail.
	// However, 429 error can now be returned if watchcache is under initialization.
	// To avoid rewriting all tests, we wait for watchcache to initialize.
	if err := c.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	delegator := cacher.NewCacheDelegator(c, wrappedStorage)
	t.Cleanup(func() {
		delegator.Stop()
		c.Stop()
	})
	return &cacherEnv{
		ctx:       ctx,
		delegator: delegator,
		storage:   wrappedStorage,
		client:    client,
		core:      core,
		clock:     clk,
		compactor: hasCompactor,
	}
}
