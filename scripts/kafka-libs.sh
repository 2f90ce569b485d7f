#!/usr/bin/env bash
# Prints a folder of jars that runs Apache Kafka (broker, StorageTool, kafka-consumer-groups).
#
# Order of preference:
#   1. $KAFKA_HOME/libs when KAFKA_HOME points at an unpacked Kafka distribution;
#   2. the cache under $CGO_CACHE (default $HOME/.cache/consumer-group-operator);
#   3. Maven Central: `mvn dependency:copy-dependencies` of kafka_2.13 + kafka-tools + a log4j2
#      SLF4J binding into that cache (once).
# Progress goes to stderr; stdout is only the folder.
set -euo pipefail

# CGO_KAFKA_VERSION picks the release (any on Maven Central from 3.9 on; each cached apart).
KAFKA_VERSION="${CGO_KAFKA_VERSION:-4.4.0}"
LOG4J_VERSION="${LOG4J_VERSION:-2.24.3}"
CACHE="${CGO_CACHE:-$HOME/.cache/consumer-group-operator}"
log() { echo "[kafka-libs] $*" >&2; }

if [[ -n "${KAFKA_HOME:-}" ]]; then
  if compgen -G "$KAFKA_HOME/libs/kafka_2.13-*.jar" >/dev/null; then
    echo "$KAFKA_HOME/libs"
    exit 0
  fi
  log "KAFKA_HOME=$KAFKA_HOME has no libs/kafka_2.13-*.jar; falling back to the cache"
fi

# Kafka 3.x logs through reload4j (log4j 1): excluded, so that the log4j2 binding below is the only
# one and the broker writes the log file the tests wait on, as Kafka 4 does.
exclusions='<exclusions><exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId></exclusion><exclusion><groupId>ch.qos.reload4j</groupId><artifactId>reload4j</artifactId></exclusion></exclusions>'
pom=$(cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.cgo</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version>$exclusions</dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>$exclusions</dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
)
# The folder name carries a hash of the recipe, so changing it never reuses a stale folder.
dest="$CACHE/kafka-$KAFKA_VERSION-$(sha1sum <<<"$pom" | cut -c1-10)/libs"
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"
  exit 0
fi

# Parallel callers wait for one download instead of racing in the same folder.
mkdir -p "$(dirname "$dest")"
exec 9>"$dest.lock"
flock 9
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"
  exit 0
fi
command -v mvn >/dev/null || { log "Maven is required to fetch Kafka (or set KAFKA_HOME)"; exit 1; }
work="$CACHE/build/kafka-$KAFKA_VERSION"
mkdir -p "$work"
log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central (once; cached in $dest)"
echo "$pom" >"$work/pom.xml"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
mvn -B -q -f "$work/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest.tmp" >&2
rm -rf "$dest"
mv "$dest.tmp" "$dest"
touch "$dest/.complete"
echo "$dest"
