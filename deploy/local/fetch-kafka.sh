#!/usr/bin/env bash
# Fetches the Apache Kafka broker jars (KRaft, single node) from Maven Central into
# .cache/kafka-<version>/lib. Skipped when the jars are already there; the Maven repository
# is machine-wide (~/.cache/gitops/m2), so a fresh clone copies instead of downloading.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${GITOPS_CACHE_DIR:-$ROOT/.cache}
SHARED=${GITOPS_SHARED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitops}
VERSION=$(sed -n 's#.*<kafka.version>\(.*\)</kafka.version>.*#\1#p' "$ROOT/deploy/local/kafka-pom.xml")
LIB=$CACHE/kafka-$VERSION/lib
if [[ -f $LIB/.complete ]]; then echo "[fetch-kafka] kafka $VERSION cached" >&2; exit 0; fi
mkdir -p "$LIB"
mvn -B -q -f "$ROOT/deploy/local/kafka-pom.xml" -Dmaven.repo.local="$SHARED/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$LIB"
touch "$LIB/.complete"
echo "[fetch-kafka] kafka $VERSION in $LIB" >&2
