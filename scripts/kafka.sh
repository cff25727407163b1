#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) for Breakwater's
# integration tests. No Docker and no Kafka tarball: the broker jars come from
# Maven Central through scripts/kafka/pom.xml and are cached outside the repo.
#
# Usage: scripts/kafka.sh start|stop|restart|status|bootstrap
#
#   start      fetch jars (first time only), format a fresh KRaft log dir, start
#              the broker in the background, wait until it answers ApiVersions,
#              then print the bootstrap address as the LAST line of stdout:
#                  BOOTSTRAP=$(bash scripts/kafka.sh start | tail -1)
#              All progress messages go to stderr.
#   stop       SIGTERM, wait up to 30 s, then SIGKILL. Exit 0 if not running,
#              so it is safe in a trap.
#   restart    stop the running broker and start it again on the SAME log dir
#              (topics, offsets and transactions survive), wait until it answers:
#              the broker-restart test uses it mid-stream.
#   status     exit 0 and print the address if running and answering.
#   bootstrap  print the address.
#
# Environment (all optional):
#   BREAKWATER_CACHE_DIR             jar cache root (default ~/.cache/breakwater)
#   BREAKWATER_KAFKA_DIR             run dir, wiped on every start
#                                    (default $BREAKWATER_CACHE_DIR/kafka-run)
#   BREAKWATER_KAFKA_PORT            client listener port (default 19092)
#   BREAKWATER_KAFKA_CONTROLLER_PORT KRaft controller port (default 19093)
#   BREAKWATER_KAFKA_VERSION         Kafka version (default 4.1.1)
#   BREAKWATER_KAFKA_START_TIMEOUT   seconds to wait for readiness (default 90)
#   BREAKWATER_KAFKA_HEAP_OPTS       broker heap flags (default -Xms256m -Xmx1g)
#   JAVA_HOME                        if set, $JAVA_HOME/bin/java is used
set -euo pipefail

# 4.1.x: Kafka 4 brokers need Java 17+, and 4.1 is the current stable line.
KAFKA_VERSION="${BREAKWATER_KAFKA_VERSION:-4.1.1}"
HOST=127.0.0.1
PORT="${BREAKWATER_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${BREAKWATER_KAFKA_CONTROLLER_PORT:-19093}"
BOOTSTRAP="$HOST:$PORT"
START_TIMEOUT="${BREAKWATER_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT=30
HEAP_OPTS="${BREAKWATER_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/kafka/pom.xml"
LOG4J2_TEMPLATE="$SCRIPT_DIR/kafka/log4j2.xml"

CACHE_DIR="${BREAKWATER_CACHE_DIR:-${HOME:?HOME is not set: set BREAKWATER_CACHE_DIR}/.cache/breakwater}"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
# Written only after a successful copy; holds a hash of the pom so that editing
# the pom (adding a jar, ...) invalidates the cache instead of silently reusing it.
LIBS_MARKER="$KAFKA_HOME/.complete"
RUN_DIR="${BREAKWATER_KAFKA_DIR:-$CACHE_DIR/kafka-run}"
PID_FILE="$RUN_DIR/kafka.pid"
LOG_FILE="$RUN_DIR/kafka.log"
# Present in every run dir this script creates: we only ever `rm -rf` a
# directory that carries it (or is empty), never an arbitrary user path.
RUN_MARKER="$RUN_DIR/.breakwater-kafka-run"

# Main classes (Kafka 4.x), i.e. what bin/kafka-server-start.sh,
# bin/kafka-storage.sh and bin/kafka-broker-api-versions.sh run:
#   kafka.Kafka                                      broker/controller   (kafka_2.13)
#   kafka.tools.StorageTool                          storage format      (kafka_2.13)
#   org.apache.kafka.tools.BrokerApiVersionsCommand  readiness probe     (kafka-tools)
MAIN_BROKER=kafka.Kafka
MAIN_STORAGE=kafka.tools.StorageTool
MAIN_PROBE=org.apache.kafka.tools.BrokerApiVersionsCommand

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites

JAVA=java
[[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]] && JAVA="$JAVA_HOME/bin/java"

require_java() {
    command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Kafka $KAFKA_VERSION needs Java >= 17).
  Install on Debian/Ubuntu:  apt-get install -y openjdk-17-jre-headless maven"
    local out first second major
    out="$("$JAVA" -version 2>&1 || true)"
    # `java -version` prints e.g. 'openjdk version "17.0.15" 2025-04-15' or
    # 'version "25"', and for Java 8 and older 'version "1.8.0_392"'.
    read -r first second < <(sed -n 's/.*version "\([0-9][0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' <<<"$out" | head -1) || true
    [[ -n "${first:-}" ]] || die "cannot parse the output of '$JAVA -version':
$out"
    if [[ "$first" == 1 ]]; then major="${second:-0}"; else major="$first"; fi
    ((major >= 17)) || die "Java $major found at $(command -v "$JAVA"), Kafka $KAFKA_VERSION needs Java >= 17.
  Install on Debian/Ubuntu:  apt-get install -y openjdk-17-jre-headless maven"
}

require_mvn() {
    command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) not found; it is needed once to download the Kafka jars.
  Install on Debian/Ubuntu:  apt-get install -y openjdk-17-jre-headless maven"
}

pom_hash() { { echo "$KAFKA_VERSION"; cat "$POM"; } | sha256sum | cut -d' ' -f1; }

libs_complete() {
    [[ -f "$LIBS_MARKER" && -d "$LIBS" && "$(cat "$LIBS_MARKER")" == "$(pom_hash)" ]]
}

# Resolve the broker + tools + log4j2 into $LIBS with Maven (batch mode: CI has
# no stdin). Copies into a temp dir and renames, so an interrupted download
# never leaves a half-filled libs/ that looks usable.
fetch_libs() {
    if libs_complete; then
        log "using cached Kafka $KAFKA_VERSION jars in $LIBS"
        return
    fi
    require_mvn
    log "downloading Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (first run only)"
    mkdir -p "$KAFKA_HOME"
    local tmp="$KAFKA_HOME/libs.tmp.$$"
    rm -rf "$tmp"
    # Maven's output goes to a log (our stdout is reserved for the address, and
    # even `mvn -q -B` emits stray ANSI escapes); it is shown only on failure.
    local mvn_log="$KAFKA_HOME/mvn.log"
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
            -Dkafka.version="$KAFKA_VERSION" \
            -DincludeScope=runtime \
            -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
        tail -n 50 "$mvn_log" >&2 || true
        rm -rf "$tmp"
        die "mvn could not resolve Kafka $KAFKA_VERSION (Maven output above, full log in $mvn_log)"
    fi
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] \
        || { rm -rf "$tmp"; die "mvn finished but the Kafka jars are missing from $tmp"; }
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
    pom_hash >"$LIBS_MARKER"
}

# ------------------------------------------------------------------- processes

# Pid from the pid file if that process is alive AND is our broker (guards
# against a recycled pid after a reboot or a stale run dir).
running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *" $MAIN_BROKER "* ]] || return 1
    echo "$pid"
}

# kill -0 also succeeds for a zombie: when start's own failure path stops the
# broker it just launched, that broker is still our child and stays a zombie
# until bash reaps it, so treat state Z as dead.
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# JVM flags for the short-lived tool JVMs: C1 only and serial GC start faster.
TOOL_JVM_OPTS=(-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m
               -Dbreakwater.kafka.loglevel=WARN)

# One ApiVersions (+ metadata) round trip with Kafka's own BrokerApiVersionsCommand.
# Short client timeouts plus `timeout` so a half-started broker cannot hang us.
probe() {
    [[ -d "$LIBS" ]] || return 1
    local cfg="$RUN_DIR/probe.properties"
    [[ -f "$cfg" ]] || return 1
    local out
    out="$(timeout 30 "$JAVA" "${TOOL_JVM_OPTS[@]}" \
            -Dlog4j2.configurationFile="$RUN_DIR/log4j2.xml" \
            -cp "$LIBS/*" "$MAIN_PROBE" \
            --bootstrap-server "$BOOTSTRAP" --command-config "$cfg" 2>&1)" || return 1
    # Success prints '127.0.0.1:19092 (id: 1 rack: null ...) -> (' then the API list.
    grep -q -- "-> (" <<<"$out"
}

stop_broker() {
    local pid
    if ! pid="$(running_pid)"; then
        log "Kafka is not running"
        rm -f "$PID_FILE"
        return 0
    fi
    log "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while alive "$pid" && ((waited < STOP_TIMEOUT * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if alive "$pid"; then
        log "Kafka did not exit within ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        waited=0
        while alive "$pid" && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
    fi
    rm -f "$PID_FILE"
    log "Kafka stopped"
}

# ------------------------------------------------------------------ start steps

fresh_run_dir() {
    if [[ -e "$RUN_DIR" ]]; then
        [[ -d "$RUN_DIR" ]] || die "$RUN_DIR exists and is not a directory"
        if [[ ! -f "$RUN_MARKER" && -n "$(ls -A "$RUN_DIR")" ]]; then
            die "refusing to wipe $RUN_DIR: it is not empty and was not created by kafka.sh (set BREAKWATER_KAFKA_DIR elsewhere)"
        fi
        rm -rf "$RUN_DIR"
    fi
    mkdir -p "$RUN_DIR/data"
    touch "$RUN_MARKER"
}

write_configs() {
    cp "$LOG4J2_TEMPLATE" "$RUN_DIR/log4j2.xml"

    # Client settings for the readiness probe: fail fast, the loop retries.
    cat >"$RUN_DIR/probe.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF

    cat >"$RUN_DIR/server.properties" <<EOF
# Generated by scripts/kafka.sh; the run dir is wiped on every start.

# ---- KRaft combined mode: one JVM is both broker and (sole) controller.
process.roles=broker,controller
node.id=1
# Dynamic quorum (Kafka 4.x style): the storage dir is formatted with
# 'kafka-storage format --standalone', so no controller.quorum.voters here.
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$RUN_DIR/data

# ---- One node: every internal topic must have RF 1 / min ISR 1, or
# transactions, consumer groups and acks=all produces can never succeed.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# ---- Fast internal topics: __consumer_offsets and __transaction_state are
# created on first use (first group join / first InitProducerId); with the
# defaults (50 partitions each) that first call waits for 50 leader elections.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.num.partitions=1

# ---- Test behaviour.
# Consumer groups form immediately instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
# Tests create their own topics; this only applies to auto-created ones.
num.partitions=1
delete.topic.enable=true
EOF
}

format_storage() {
    # Kafka Uuid string form: 16 random bytes, URL-safe base64, no padding.
    # Kafka's own random-uuid never returns one starting with '-' (it would look
    # like a flag), so neither do we. Saves a JVM start vs `StorageTool random-uuid`.
    local cluster_id
    while :; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
        [[ "$cluster_id" != -* ]] && break
    done
    log "formatting KRaft storage in $RUN_DIR/data (cluster id $cluster_id)"
    local out
    if ! out="$("$JAVA" "${TOOL_JVM_OPTS[@]}" \
            -Dlog4j2.configurationFile="$RUN_DIR/log4j2.xml" \
            -cp "$LIBS/*" "$MAIN_STORAGE" format \
            --config "$RUN_DIR/server.properties" \
            --cluster-id "$cluster_id" --standalone 2>&1)"; then
        die "kafka-storage format failed:
$out"
    fi
}

launch_broker() {
    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (controller $HOST:$CONTROLLER_PORT), log: $LOG_FILE"
    # stdin/stdout/stderr are all detached from the caller: otherwise
    # `$(kafka.sh start | tail -1)` would wait for the broker to exit, since it
    # would still hold the pipe open. setsid keeps a Ctrl-C aimed at the caller's
    # process group (make, cargo) from killing the broker behind a trap's back.
    # A background job of a non-interactive shell is not a process-group leader,
    # so setsid execs in place (no fork) and $! is the java pid itself.
    # shellcheck disable=SC2086  # HEAP_OPTS is a list of flags
    nohup setsid "$JAVA" $HEAP_OPTS \
        -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$RUN_DIR/log4j2.xml" \
        -Dbreakwater.kafka.loglevel=INFO \
        -cp "$LIBS/*" "$MAIN_BROKER" "$RUN_DIR/server.properties" \
        </dev/null >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
}

fail_with_log() {
    log "error: $1"
    if [[ -f "$LOG_FILE" ]]; then
        log "last lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" >&2 || true
    fi
    stop_broker >/dev/null 2>&1 || true
    exit 1
}

wait_ready() {
    local pid="$1" started=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    log "waiting up to ${START_TIMEOUT}s for Kafka to answer ApiVersions on $BOOTSTRAP"
    while ((SECONDS < deadline)); do
        alive "$pid" || fail_with_log "the Kafka process (pid $pid) exited during startup"
        # A TCP connect is free; only spend a JVM on the real probe once the port listens.
        if port_open "$PORT" && probe; then
            log "Kafka is up after $((SECONDS - started))s"
            return 0
        fi
        sleep 0.5
    done
    fail_with_log "Kafka did not answer on $BOOTSTRAP within ${START_TIMEOUT}s"
}

cmd_start() {
    require_java
    local pid
    if pid="$(running_pid)"; then
        log "Kafka is already running (pid $pid)"
        wait_ready "$pid"
        echo "$BOOTSTRAP"
        return 0
    fi
    # Something else (a broker from another run dir, another service) on our
    # ports would make the new broker die with a bind error: say so plainly.
    local p
    for p in "$PORT" "$CONTROLLER_PORT"; do
        port_open "$p" && die "port $HOST:$p is already in use by another process (not the broker in $RUN_DIR); stop it or set BREAKWATER_KAFKA_PORT / BREAKWATER_KAFKA_CONTROLLER_PORT"
    done
    fetch_libs
    fresh_run_dir
    write_configs
    format_storage
    launch_broker
    wait_ready "$(cat "$PID_FILE")"
    echo "$BOOTSTRAP"
}

cmd_status() {
    local pid
    if ! pid="$(running_pid)"; then
        log "Kafka is not running"
        return 1
    fi
    require_java
    if probe; then
        log "Kafka is running (pid $pid) and answering"
        echo "$BOOTSTRAP"
        return 0
    fi
    log "Kafka process $pid is alive but does not answer on $BOOTSTRAP"
    return 1
}

cmd_restart() {
    require_java
    running_pid >/dev/null || die "no broker started by kafka.sh is running in $RUN_DIR"
    stop_broker
    launch_broker
    wait_ready "$(cat "$PID_FILE")"
    echo "$BOOTSTRAP"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) stop_broker ;;
    restart) cmd_restart ;;
    status) cmd_status ;;
    bootstrap) echo "$BOOTSTRAP" ;;
    *)
        echo "usage: $0 start|stop|restart|status|bootstrap" >&2
        exit 2
        ;;
esac
