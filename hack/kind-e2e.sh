#!/usr/bin/env bash
# End to end on kind, for machines with Docker (`make kind-e2e`): a real cluster, both images
# built from this tree, the chart installed, the digits TrainingJob trained for real on CPU (two
# pods, DDP over gloo), its model served by an InferenceService and asked about one image.
#
# Needs: docker, kind, kubectl, helm, python3. Everything it creates goes with the cluster at
# the end, unless AIDC_KIND_KEEP=1 (then `kind delete cluster --name aidc` removes it).
# Checkpoints stay in /tmp/aidc-kind/storage on the host (see kind-config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${AIDC_KIND_CLUSTER:-aidc}
RELEASE=aidc-operator
OPERATOR_NAMESPACE=aidc-system
NAMESPACE=aidc-e2e
OPERATOR_IMAGE=aidc/operator:e2e
TRAINER_IMAGE=aidc/trainer:e2e-cpu
LOCAL_PORT=${AIDC_KIND_PORT:-18080}
KUBECTL=(kubectl --context "kind-${CLUSTER}")
HELM=(helm --kube-context "kind-${CLUSTER}")
port_forward=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  local status=$?
  if [[ -n "$port_forward" ]]; then kill "$port_forward" 2>/dev/null || true; fi
  if [[ $status -ne 0 ]]; then
    say "failed (exit $status): what the cluster shows"
    "${KUBECTL[@]}" get trainingjobs.aidc.io,inferenceservices.aidc.io,pods,pvc -A -o wide || true
    "${KUBECTL[@]}" -n "$OPERATOR_NAMESPACE" logs deployment/"$RELEASE" --tail=100 || true
  fi
  if [[ "${AIDC_KIND_KEEP:-0}" == 1 ]]; then
    say "keeping cluster ${CLUSTER} (AIDC_KIND_KEEP=1)"
  else
    say "deleting cluster ${CLUSTER}"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}

for tool in docker kind kubectl helm python3; do
  command -v "$tool" > /dev/null || { echo "kind-e2e needs $tool on PATH" >&2; exit 1; }
done

say "cluster ${CLUSTER}: one control plane, two workers"
mkdir -p /tmp/aidc-kind/storage
kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 180s
trap cleanup EXIT

say "images"
docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
docker build -f trainer-image/Dockerfile --build-arg VARIANT=cpu -t "$TRAINER_IMAGE" trainer-image
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$TRAINER_IMAGE"

say "operator (Helm chart)"
"${HELM[@]}" install "$RELEASE" charts/aidc-operator \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository="${OPERATOR_IMAGE%:*}" --set image.tag="${OPERATOR_IMAGE##*:}" \
  --set image.pullPolicy=Never --set operator.podImagePullPolicy=Never \
  --set trainerImage="$TRAINER_IMAGE" \
  --wait --timeout 5m
"${HELM[@]}" test "$RELEASE" --namespace "$OPERATOR_NAMESPACE" --logs

say "training: examples/trainingjob-digits-cpu.yaml"
"${KUBECTL[@]}" create namespace "$NAMESPACE"
"${KUBECTL[@]}" -n "$NAMESPACE" apply -f examples/trainingjob-digits-cpu.yaml
"${KUBECTL[@]}" -n "$NAMESPACE" wait --for=condition=Succeeded trainingjob/digits --timeout=30m
"${KUBECTL[@]}" -n "$NAMESPACE" get trainingjob/digits -o wide

say "serving: examples/inferenceservice-digits.yaml"
"${KUBECTL[@]}" -n "$NAMESPACE" apply -f examples/inferenceservice-digits.yaml
"${KUBECTL[@]}" -n "$NAMESPACE" wait --for=condition=Ready inferenceservices.aidc.io/digits --timeout=10m
"${KUBECTL[@]}" -n "$NAMESPACE" port-forward service/digits "${LOCAL_PORT}:8080" > /dev/null &
port_forward=$!

say "one 28x28 image to /v2/models/digits/infer"
python3 - "http://127.0.0.1:${LOCAL_PORT}" <<'PY'
import json
import sys
import time
import urllib.request

base = sys.argv[1]
for _ in range(60):  # the port-forward takes a moment
    try:
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2):
            break
    except OSError:
        time.sleep(1)
with urllib.request.urlopen(f"{base}/v2/models/digits", timeout=10) as response:
    metadata = json.load(response)
spec = metadata["inputs"][0]
# a "1": a vertical stroke in the middle of a black 28x28 image, values in [0, 1]
image = [[1.0 if 12 <= x <= 15 and 4 <= y <= 23 else 0.0 for x in range(28)] for y in range(28)]
shape = [1, *spec["shape"][1:]]
request = {"inputs": [{"name": spec["name"], "shape": shape, "datatype": spec["datatype"],
                       "data": [v for row in image for v in row]}]}
post = urllib.request.Request(f"{base}/v2/models/digits/infer", data=json.dumps(request).encode(),
                              headers={"Content-Type": "application/json"})
with urllib.request.urlopen(post, timeout=30) as response:
    answer = json.load(response)
outputs = {o["name"]: o["data"] for o in answer["outputs"]}
print(json.dumps(answer)[:400])
print(f"predicted class: {outputs['predicted_class'][0]}")
PY

say "cleaning up"
kill "$port_forward" && port_forward=""
"${KUBECTL[@]}" -n "$NAMESPACE" delete inferenceservices.aidc.io/digits trainingjobs.aidc.io/digits --wait=true --timeout=2m
"${KUBECTL[@]}" delete namespace "$NAMESPACE" --wait=true --timeout=5m
"${HELM[@]}" uninstall "$RELEASE" --namespace "$OPERATOR_NAMESPACE" --wait
say "kind end to end: passed"
