// The suite on the etcd3 store: every storagetesting.Run* call of k8s.io/apiserver v0.37.2's
// pkg/storage/etcd3/store_test.go and watcher_test.go, in their order, with their arguments,
// through testSetup below (store_test.go's, but dialing core etcd or the gateway).
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"

	"k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"
)

// store_test.go's scheme and codecs.
var (
	etcd3Scheme = runtime.NewScheme()
	etcd3Codecs = serializer.NewCodecFactory(etcd3Scheme)
)

const defaultTestPrefix = "test!"

func init() {
	metav1.AddToGroupVersion(etcd3Scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(etcd3Scheme))
	utilruntime.Must(examplev1.AddToScheme(etcd3Scheme))
}

func newPod() runtime.Object     { return &example.Pod{} }
func newPodList() runtime.Object { return &example.PodList{} }

// etcd3Store is what etcd3.New returns (an unexported type) as the tests use it.
type etcd3Store interface {
	storage.Interface
	Close()
}

// etcd3Env is what store_test.go's testSetup returns, and the unexported store fields its tests
// read (codec, transformer), held here.
type etcd3Env struct {
	ctx         context.Context
	store       etcd3Store
	client      *kubernetes.Client
	core        *clientv3.Client
	codec       runtime.Codec
	transformer *swappableTransformer
}

func TestEtcd3(t *testing.T) {
	t.Run("Create", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestCreate(e.ctx, t, e.store, checkStorageInvariants(e.client.Client, e.codec))
		})
	})
	t.Run("CreateWithTTL", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestCreateWithTTL(e.ctx, t, e.store)
		})
	})
	t.Run("CreateWithKeyExist", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestCreateWithKeyExist(e.ctx, t, e.store)
		})
	})
	t.Run("Get", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGet(e.ctx, t, e.store)
		})
	})
	t.Run("UnconditionalDelete", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestUnconditionalDelete(e.ctx, t, e.store)
		})
	})
	t.Run("ConditionalDelete", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestConditionalDelete(e.ctx, t, e.store)
		})
	})
	t.Run("DeleteWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestion(e.ctx, t, e.store)
		})
	})
	t.Run("DeleteWithSuggestionAndConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionAndConflict(e.ctx, t, e.store)
		})
	})
	t.Run("DeleteWithSuggestionOfDeletedObject", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(e.ctx, t, e.store)
		})
	})
	t.Run("ValidateDeletionWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestValidateDeletionWithSuggestion(e.ctx, t, e.store)
		})
	})
	t.Run("ValidateDeletionWithOnlySuggestionValid", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(e.ctx, t, e.store)
		})
	})
	t.Run("DeleteWithConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestDeleteWithConflict(e.ctx, t, e.store)
		})
	})
	t.Run("DeleteWithConflictAndMissingExpectedTransformOrDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			codec := &testCodec{Codec: apitesting.TestCodec(etcd3Codecs, examplev1.SchemeGroupVersion)}
			e := testSetup(t, b, withCodec(codec))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		})
	})
	t.Run("DeleteWithConflictAndExpectedTransformError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			transformer := &testTransformer{Transformer: newTestTransformer()}
			e := testSetup(t, b, withTransformer(transformer))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, transformer.setFailing)
		})
	})
	t.Run("DeleteWithConflictAndExpectedDecodeError", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			codec := &testCodec{Codec: apitesting.TestCodec(etcd3Codecs, examplev1.SchemeGroupVersion)}
			e := testSetup(t, b, withCodec(codec))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		})
	})
	t.Run("DeleteWithSuggestionAndMissingExpectedTransformOrDecodeFailure", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store)
		})
	})
	t.Run("PreconditionalDeleteWithSuggestion", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(e.ctx, t, e.store)
		})
	})
	t.Run("PreconditionalDeleteWithSuggestionPass", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(e.ctx, t, e.store)
		})
	})
	t.Run("ListPaging", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestListPaging(e.ctx, t, e.store)
		})
	})
	t.Run("GetListNonRecursive", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGetListNonRecursive(e.ctx, t, increaseRVFunc(e.client.Client), e.store)
		})
	})
	t.Run("GetListRecursivePrefix", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGetListRecursivePrefix(e.ctx, t, e.store)
		})
	})
	t.Run("KeySchema", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestKeySchema(e.ctx, t, e.store)
		})
	})
	t.Run("GetListWithErrorAggregation", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			store := etcd3.NewStoreWithUnsafeCorruptObjectDeletion(e.store, schema.GroupResource{Resource: "pods"})
			storagetesting.RunTestGetListWithErrorAggregation(e.ctx, t, &storeWithTransformerOverride{Interface: store, transformer: e.transformer}, corruptObjectError())
		})
	})
	t.Run("GetListWithoutErrorAggregation", func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, false)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGetListWithoutErrorAggregation(e.ctx, t, &storeWithTransformerOverride{Interface: e.store, transformer: e.transformer}, corruptObjectError())
		})
	})
	t.Run("GuaranteedUpdate", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGuaranteedUpdate(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer}, checkStorageInvariants(e.client.Client, e.codec))
		})
	})
	t.Run("GuaranteedUpdateWithTTL", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithTTL(e.ctx, t, e.store)
		})
	})
	t.Run("GuaranteedUpdateChecksStoredData", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateChecksStoredData(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer})
		})
	})
	t.Run("GuaranteedUpdateWithConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithConflict(e.ctx, t, e.store)
		})
	})
	t.Run("GuaranteedUpdateWithSuggestionAndConflict", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(e.ctx, t, e.store)
		})
	})
	t.Run("TransformationFailure", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestTransformationFailure(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer})
		})
	})
	t.Run("List", func(t *testing.T) {
		for _, rangeStream := range []bool{false, true} {
			t.Run(fmt.Sprintf("rangeStream=%v", rangeStream), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, rangeStream)
				bothPaths(t, func(t *testing.T, b *backend) {
					resetFeatureSupportCheckerDuringTest(t)
					e := testSetup(t, b)
					kvRecorder := e.client.KV.(*storagetesting.KVRecorder)
					storagetesting.RunTestList(e.ctx, t, e.store, compactStorage(e.store, e.core), false, e.client.Kubernetes.(*storagetesting.KubernetesRecorder))
					streamReads := kvRecorder.GetStreamReadsAndReset()
					if rangeStream && streamReads == 0 {
						t.Error("expected lists to be served by RangeStream")
					}
					if !rangeStream && streamReads > 0 {
						t.Errorf("expected no RangeStream requests with the feature disabled, got %d", streamReads)
					}
				})
			})
		}
	})
	t.Run("ConsistentList", func(t *testing.T) {
		for _, rangeStream := range []bool{false, true} {
			t.Run(fmt.Sprintf("rangeStream=%v", rangeStream), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, rangeStream)
				bothPaths(t, func(t *testing.T, b *backend) {
					resetFeatureSupportCheckerDuringTest(t)
					e := testSetup(t, b)
					storagetesting.RunTestConsistentList(e.ctx, t, e.store, increaseRVFunc(e.client.Client), false, true, false)
				})
			})
		}
	})
	t.Run("CompactRevision", func(t *testing.T) {
		// Test requires store to observe extenal changes to compaction revision, requiring dedicated watch on compact key which is enabled by ListFromCacheSnapshot.
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestCompactRevision(e.ctx, t, e.store, increaseRVFunc(e.client.Client), compactStorage(e.store, e.core))
		})
	})
	t.Run("ListContinuation", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			validation := checkStorageCallsInvariants(e.transformer.get().(*storagetesting.PrefixTransformer), e.client.KV.(*storagetesting.KVRecorder))
			storagetesting.RunTestListContinuation(e.ctx, t, e.store, validation)
		})
	})
	t.Run("ListPaginationRareObject", func(t *testing.T) {
		// ListFromCacheSnapshots adds additional Get call to read compact key.
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, false)
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			validation := checkStorageCallsInvariants(e.transformer.get().(*storagetesting.PrefixTransformer), e.client.KV.(*storagetesting.KVRecorder))
			storagetesting.RunTestListPaginationRareObject(e.ctx, t, e.store, validation)
		})
	})
	t.Run("ListContinuationWithFilter", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			validation := checkStorageCallsInvariants(e.transformer.get().(*storagetesting.PrefixTransformer), e.client.KV.(*storagetesting.KVRecorder))
			storagetesting.RunTestListContinuationWithFilter(e.ctx, t, e.store, validation)
		})
	})
	t.Run("NamespaceScopedList", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestNamespaceScopedList(e.ctx, t, e.store)
		})
	})
	t.Run("ListInconsistentContinuation", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestListInconsistentContinuation(e.ctx, t, e.store, compactStorage(e.store, e.core))
		})
	})
	t.Run("ListResourceVersionMatch", func(t *testing.T) {
		bothPaths(t, func(t *testing.T, b *backend) {
			e := testSetup(t, b)
			storagetesting.RunTestListResourceVersionMatch(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer})
		})
	})
	t.Run("Stats", func(t *testing.T) {
		for _, sizeBasedListCostEstimate := range []bool{true, false} {
			t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeBasedListCostEstimate), func(t *testing.T) {
				bothPaths(t, func(t *testing.T, b *backend) {
					e := testSetup(t, b)
					if sizeBasedListCostEstimate {
						err := e.store.EnableResourceSizeEstimation(e.getKeys)
						if err != nil {
							t.Fatal(err)
						}
					}
					storagetesting.RunTestStats(e.ctx, t, e.store, e.codec, e.transformer, sizeBasedListCostEstimate)
				})
			})
		}
	})

	// watcher_test.go's TestWatch.
	t.Run("Watch", func(t *testing.T) {
		t.Run("Watch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatch(e.ctx, t, e.store)
			})
		})
		t.Run("ClusterScopedWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestClusterScopedWatch(e.ctx, t, e.store)
			})
		})
		t.Run("NamespaceScopedWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestNamespaceScopedWatch(e.ctx, t, e.store)
			})
		})
		t.Run("DeleteTriggerWatch", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestDeleteTriggerWatch(e.ctx, t, e.store)
			})
		})
		t.Run("WatchFromZero", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchFromZero(e.ctx, t, e.store, compactStorage(e.store, e.core))
			})
		})
		t.Run("WatchFromNonZero", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchFromNonZero(e.ctx, t, e.store)
			})
		})
		t.Run("DelayedWatchDelivery", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestDelayedWatchDelivery(e.ctx, t, e.store)
			})
		})
		t.Run("WatchError", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchError(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer})
			})
		})
		t.Run("WatchContextCancel", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchContextCancel(e.ctx, t, e.store)
			})
		})
		t.Run("WatcherTimeout", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatcherTimeout(e.ctx, t, e.store)
			})
		})
		t.Run("WatchDeleteEventObjectHaveLatestRV", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(e.ctx, t, e.store)
			})
		})
		t.Run("WatchInitializationSignal", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchInitializationSignal(e.ctx, t, e.store)
			})
		})
		t.Run("ProgressNotify", func(t *testing.T) {
			// Upstream: clusterConfig.WatchProgressNotifyInterval = time.Second.
			requireProgressNotifyInterval(t, time.Second)
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunOptionalTestProgressNotify(e.ctx, t, e.store, increaseRVFunc(e.client.Client))
			})
		})
		t.Run("WatchWithUnsafeDelete", func(t *testing.T) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchWithUnsafeDelete(e.ctx, t, &storeWithTransformerOverride{Interface: e.store, transformer: e.transformer}, corruptObjectError())
			})
		})
		t.Run("WatchDispatchBookmarkEvents", func(t *testing.T) {
			// Upstream: clusterConfig.WatchProgressNotifyInterval = time.Second.
			requireProgressNotifyInterval(t, time.Second)
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunTestWatchDispatchBookmarkEvents(e.ctx, t, e.store, false)
			})
		})
		t.Run("SendInitialEventsBackwardCompatibility", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunSendInitialEventsBackwardCompatibility(e.ctx, t, e.store)
			})
		})
		for _, rangeStream := range []bool{false, true} {
			t.Run(fmt.Sprintf("RangeStream=%v", rangeStream), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, rangeStream)
				t.Run("WatchSemantics", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						requireFreshEtcd(t, b, watchesFromRevision1)
						e := testSetup(t, b)
						storagetesting.RunWatchSemantics(e.ctx, t, e.store)
					})
				})
				t.Run("WatchSemanticsWithConcurrentDecode", func(t *testing.T) {
					featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ConcurrentWatchObjectDecode, true)
					bothPaths(t, func(t *testing.T, b *backend) {
						requireFreshEtcd(t, b, watchesFromRevision1)
						e := testSetup(t, b)
						storagetesting.RunWatchSemantics(e.ctx, t, e.store)
					})
				})
				t.Run("WatchSemanticInitialEventsExtended", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						e := testSetup(t, b)
						storagetesting.RunWatchSemanticInitialEventsExtended(e.ctx, t, e.store)
					})
				})
				t.Run("WatchListMatchSingle", func(t *testing.T) {
					bothPaths(t, func(t *testing.T, b *backend) {
						e := testSetup(t, b)
						storagetesting.RunWatchListMatchSingle(e.ctx, t, e.store)
					})
				})
			})
		}
		t.Run("WatchErrorEventIsBlockingFurtherEvent", func(t *testing.T) {
			bothPaths(t, func(t *testing.T, b *backend) {
				e := testSetup(t, b)
				storagetesting.RunWatchErrorIsBlockingFurtherEvents(e.ctx, t, &storeWithPrefixTransformer{Interface: e.store, transformer: e.transformer})
			})
		})
	})
}

// RunWatchSemantics watches from resourceVersion 1: on an etcd written to before, that replays the
// earlier tests' events on the same keys, or fails once an earlier test compacted.
const watchesFromRevision1 = "RunWatchSemantics watches from resourceVersion 1"

// requireProgressNotifyInterval skips a test whose upstream etcd runs with a progress notify
// interval other than etcd's default, unless core etcd runs with it.
func requireProgressNotifyInterval(t *testing.T, interval time.Duration) {
	t.Helper()
	if unconfigured != "" {
		t.Skip(unconfigured)
	}
	got, err := time.ParseDuration(os.Getenv(envProgressNotifyInterval))
	if err != nil || got != interval {
		t.Skipf("needs core etcd run with --watch-progress-notify-interval=%v (%s=%q)", interval, envProgressNotifyInterval, os.Getenv(envProgressNotifyInterval))
	}
}

// ---------------------------------------------------------------------------------------------
// store_test.go's helpers
// ---------------------------------------------------------------------------------------------

func checkStorageInvariants(etcdClient *clientv3.Client, codec runtime.Codec) storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		getResp, err := etcdClient.KV.Get(ctx, key)
		if err != nil {
			t.Fatalf("etcdClient.KV.Get failed: %v", err)
		}
		if len(getResp.Kvs) == 0 {
			t.Fatalf("expecting non empty result on key: %s", key)
		}
		decoded, err := runtime.Decode(codec, getResp.Kvs[0].Value[len(defaultTestPrefix):])
		if err != nil {
			t.Fatalf("expecting successful decode of object from %v\n%v", err, string(getResp.Kvs[0].Value))
		}
		obj := decoded.(*example.Pod)
		if obj.ResourceVersion != "" {
			t.Errorf("stored object should have empty resource version")
		}
		if obj.SelfLink != "" {
			t.Errorf("stored output should have empty selfLink")
		}
	}
}

type testTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (tt *testTransformer) setFailing(c bool) {
	tt.fail.Store(c)
}

func (tt *testTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) (out []byte, stale bool, err error) {
	if tt.fail.Load() {
		return nil, false, errors.New("synthetic error")
	}
	return tt.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

type testCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (tc *testCodec) setFailing(c bool) {
	tc.fail.Store(c)
}

func (tc *testCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if tc.fail.Load() {
		return nil, nil, errors.New("synthetic error")
	}
	return tc.Codec.Decode(data, defaults, into)
}

// corruptObjectError is upstream's corruptErr, &corruptObjectError{err: fmt.Errorf("bits
// flipped"), errType: untransformable}, an unexported type: etcd3's exported
// WithCorruptObjErrorHandlingTransformer makes exactly that value of a transformer's error.
func corruptObjectError() error {
	_, _, err := etcd3.WithCorruptObjErrorHandlingTransformer(failingTransformer{err: fmt.Errorf("bits flipped")}).
		TransformFromStorage(context.Background(), nil, nil)
	return err
}

type failingTransformer struct{ err error }

func (f failingTransformer) TransformFromStorage(context.Context, []byte, value.Context) ([]byte, bool, error) {
	return nil, false, f.err
}

func (f failingTransformer) TransformToStorage(context.Context, []byte, value.Context) ([]byte, error) {
	return nil, f.err
}

// storeWithPrefixTransformer is store_test.go's, on a swappableTransformer.
type storeWithPrefixTransformer struct {
	storage.Interface
	transformer *swappableTransformer
}

func (s *storeWithPrefixTransformer) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	originalTransformer := s.transformer.get().(*storagetesting.PrefixTransformer)
	transformer := *originalTransformer
	s.transformer.set(modifier(&transformer))
	return func() {
		s.transformer.set(originalTransformer)
	}
}

// storeWithTransformerOverride is store_test.go's, on a swappableTransformer.
type storeWithTransformerOverride struct {
	storage.Interface
	transformer *swappableTransformer
}

func (s *storeWithTransformerOverride) UpdateTransformer(modifier storagetesting.TransformerModifier) func() {
	orig := s.transformer.get()
	next := modifier(orig)
	s.transformer.set(next)
	return func() {
		s.transformer.set(orig)
	}
}

// maxLimit is etcd3's store.go constant, the largest page the store asks for.
const maxLimit = 10000

func checkStorageCallsInvariants(transformer *storagetesting.PrefixTransformer, recorder *storagetesting.KVRecorder) storagetesting.CallsValidation {
	return func(t *testing.T, pageSize, estimatedProcessedObjects uint64) {
		if reads := transformer.GetReadsAndReset(); reads != estimatedProcessedObjects {
			t.Errorf("unexpected reads: %d, expected: %d", reads, estimatedProcessedObjects)
		}
		estimatedGetCalls := uint64(1)
		if pageSize != 0 {
			// We expect that kube-apiserver will be increasing page sizes
			// if not full pages are received, so we should see significantly less
			// than 1000 pages (which would be result of talking to etcd with page size
			// copied from pred.Limit).
			// The expected number of calls is n+1 where n is the smallest n so that:
			// pageSize + pageSize * 2 + pageSize * 4 + ... + pageSize * 2^n >= podCount.
			// For pageSize = 1, podCount = 1000, we get n+1 = 10, 2 ^ 10 = 1024.
			currLimit := pageSize
			for sum := uint64(1); sum < estimatedProcessedObjects; {
				currLimit *= 2
				if currLimit > maxLimit {
					currLimit = maxLimit
				}
				sum += currLimit
				estimatedGetCalls++
			}
		}
		if reads := recorder.GetReadsAndReset() + recorder.GetStreamReadsAndReset(); reads != estimatedGetCalls {
			t.Fatalf("unexpected reads: %d, want: %d", reads, estimatedGetCalls)
		}
	}
}

// compactStorage is store_test.go's, with the store's compaction revision read through the
// interface (store.CompactRevision), and its wait bounded (compactionObservedWithin). `client` is
// core etcd's on both paths.
func compactStorage(s storage.Interface, client *clientv3.Client) storagetesting.Compaction {
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		versioner := storage.APIObjectVersioner{}
		rv, err := versioner.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var currentVersion int64
		currentVersion, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		// Wait for compaction to be observed.
		if utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			ctx, cancel := context.WithTimeout(ctx, compactionObservedWithin)
			defer cancel()
			for {
				select {
				case <-ctx.Done():
					t.Fatalf("the store did not observe the compaction at %d (its CompactRevision() is %d): %v", rv, s.CompactRevision(), ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
				compactedRev := s.CompactRevision()
				if compactedRev == int64(rv) {
					break
				}
			}
		}
	}
}

func increaseRVFunc(client *clientv3.Client) storagetesting.IncreaseRVFunc {
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Could not update increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

func resetFeatureSupportCheckerDuringTest(t *testing.T) {
	t.Helper()
	orig := etcdfeature.DefaultFeatureSupportChecker
	etcdfeature.DefaultFeatureSupportChecker = etcdfeature.NewDefaultFeatureSupportChecker()
	t.Cleanup(func() { etcdfeature.DefaultFeatureSupportChecker = orig })
}

// getKeys is etcd3's unexported store.getKeys, which store_test.go passes to
// EnableResourceSizeEstimation: the keys under the store's resource prefix.
func (e *etcd3Env) getKeys(ctx context.Context) ([]string, error) {
	// prepareKey("/pods/", true) with the prefix "": the path prefix "/", then "pods/".
	resp, err := e.client.KV.Get(ctx, "/pods/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys, nil
}

// ---------------------------------------------------------------------------------------------
// store_test.go's test setup, dialing b
// ---------------------------------------------------------------------------------------------

func newTestLeaseManagerConfig() etcd3.LeaseManagerConfig {
	cfg := etcd3.NewDefaultLeaseManagerConfig()
	// As 30s is the default timeout for testing in global configuration,
	// we cannot wait longer than that in a single time: change it to 1s
	// for testing purposes. See wait.ForeverTestTimeout
	cfg.ReuseDurationSeconds = 1
	return cfg
}

func newTestTransformer() value.Transformer {
	return storagetesting.NewPrefixTransformer([]byte(defaultTestPrefix), false)
}

type setupOptions struct {
	codec          runtime.Codec
	newFunc        func() runtime.Object
	newListFunc    func() runtime.Object
	prefix         string
	resourcePrefix string
	groupResource  schema.GroupResource
	transformer    value.Transformer
	leaseConfig    etcd3.LeaseManagerConfig
}

type setupOption func(*setupOptions)

func withTransformer(transformer value.Transformer) setupOption {
	return func(options *setupOptions) {
		options.transformer = transformer
	}
}

func withCodec(codec runtime.Codec) setupOption {
	return func(options *setupOptions) {
		options.codec = codec
	}
}

func withDefaults(options *setupOptions) {
	options.codec = apitesting.TestCodec(etcd3Codecs, examplev1.SchemeGroupVersion)
	options.newFunc = newPod
	options.newListFunc = newPodList
	options.prefix = ""
	options.resourcePrefix = "/pods/"
	options.groupResource = schema.GroupResource{Resource: "pods"}
	options.transformer = newTestTransformer()
	options.leaseConfig = newTestLeaseManagerConfig()
}

func testSetup(t *testing.T, b *backend, opts ...setupOption) *etcd3Env {
	t.Helper()
	setupOpts := setupOptions{}
	opts = append([]setupOption{withDefaults}, opts...)
	for _, opt := range opts {
		opt(&setupOpts)
	}
	core := newCoreClient(t, b)
	freshEtcd(t, core)
	client := newClient(t, b)
	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	transformer := newSwappableTransformer(setupOpts.transformer)
	store, err := etcd3.New(
		client,
		compactor,
		setupOpts.codec,
		setupOpts.newFunc,
		setupOpts.newListFunc,
		setupOpts.prefix,
		setupOpts.resourcePrefix,
		setupOpts.groupResource,
		transformer,
		setupOpts.leaseConfig,
		etcd3.NewDefaultDecoder(setupOpts.codec, versioner),
		versioner,
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return &etcd3Env{
		ctx:         suiteContext(t),
		store:       store,
		client:      client,
		core:        core,
		codec:       setupOpts.codec,
		transformer: transformer,
	}
}
