#!/bin/bash
# The README's `ray job submit` example, run by hand against a two-node Ray cluster on this machine
# (`ray start` head + one more node, one CPU each, Ray token authentication on) writing to a local S3
# (moto). tests/test_cluster_example.py runs the same in the suite; this script leaves the output and
# logs in $WORK for a look. CPU-sized: configs/demo.yaml with tiny random models instead of
# configs/arc2face.yaml.
# Run from the repo root with the venv on PATH:  PATH=$PWD/.venv/bin:$PATH scripts/cluster/two_node_submit.sh
# It stops only the processes it started (never `ray stop`, which stops every Ray process of the user).
set -u
W=${WORK:-/tmp/synthface-two-node}   # short: Ray's socket paths live under it
DASH=${DASHBOARD_PORT:-8266}
S3=${S3_PORT:-5555}
rm -rf "$W"; mkdir -p "$W"
python -m synthface models init-tiny "$W/models" >/dev/null
python -m synthface ids sample --config configs/demo.yaml --set identity.num_identities=8 --out "$W/bank.parquet" >/dev/null
moto_server -p "$S3" > "$W/moto.log" 2>&1 & MOTO=$!
# the nodes get S3 credentials from their environment (as from an instance role)
AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 \
    python scripts/cluster/local_cluster.py "$W/cluster" "$DASH" > "$W/cluster.log" 2>&1 & CLUSTER=$!
trap 'kill $CLUSTER $MOTO 2>/dev/null; wait $CLUSTER 2>/dev/null' EXIT
sleep 3
python -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$S3', aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1').create_bucket(Bucket='bucket')"
for _ in $(seq 1 180); do [ -f "$W/cluster/address" ] && break; sleep 1; done
[ -f "$W/cluster/address" ] || { echo "the cluster did not start: $W/cluster.log"; exit 1; }

# this shell is a client of a token cluster: docs/cluster.md, "Ray token authentication"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$W/cluster/token"
ray status --address "$(cat "$W/cluster/address")" | sed -n '/Active:/,/Pending:/p'
ray job submit --address "http://127.0.0.1:$DASH" --working-dir . \
    --runtime-env-json "{\"env_vars\": {\"FSSPEC_S3\": \"{\\\"endpoint_url\\\": \\\"http://127.0.0.1:$S3\\\"}\"}}" -- \
    python -m synthface generate --config configs/demo.yaml \
    --set models_dir="$W/models" --bank "$W/bank.parquet" --out s3://bucket/run1 \
    --set run.ids_per_shard=2 || exit 1
export FSSPEC_S3="{\"endpoint_url\": \"http://127.0.0.1:$S3\"}" AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x
python -m synthface verify s3://bucket/run1 || exit 1
python - <<'PY'
import json, fsspec
fs = fsspec.filesystem("s3")
writers = {(s["host"], s["pid"]) for s in (json.loads(fs.cat(p)) for p in fs.glob("bucket/run1/shard-??????.json"))}
print(f"shards written by {len(writers)} worker processes: {sorted(writers)}")
PY
