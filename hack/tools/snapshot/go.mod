module aidc.io/hack/tools/snapshot

go 1.26.0

// Nothing is built from it: hack/build-tools.sh copies the VolumeSnapshot CRDs (config/crd/) of
// the CSI external-snapshotter's client module, the version its snapshot controller serves, for
// the tests of storage.checkpoints.snapshotOnSuccess.
require github.com/kubernetes-csi/external-snapshotter/client/v8 v8.7.0
