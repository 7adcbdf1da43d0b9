#!/bin/sh
# Record the four real programs with the project's recorder (Linux 6.7+, root or
# vm.unprivileged_userfaultfd=1 or UFFD_USER_MODE_ONLY). Writes traces/*.npz; needs sqlite3, gzip,
# python3, redis-server and redis-benchmark (apt-get install -y sqlite3 redis-server redis-tools).
# Traces differ from run to run (timing, ASLR); run.py uses the committed ones.
set -eu
cd "$(dirname "$0")"
OUT=traces
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# 1. sqlite3: 100k inserts in one transaction, then an index (a B-tree growing, then rebuilt).
python3 - "$TMP/ins.sql" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("PRAGMA journal_mode=OFF; PRAGMA cache_size=-65536;\nCREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);\nBEGIN;\n")
    for i in range(100000):
        f.write(f"INSERT INTO t(k, v) VALUES('key{(i * 7919) % 100003}', randomblob(64));\n")
    f.write("COMMIT;\nCREATE INDEX tk ON t(k);\n")
PY
pagesync-sim trace record --interval 10ms -o "$OUT/sqlite3.npz" -- sqlite3 "$TMP/db.sqlite" ".read $TMP/ins.sql"

# 2. gzip -9 of 32 MB of generated, compressible text (a streaming program with small buffers).
python3 -c "
import random
r = random.Random(5); words = [''.join(r.choice('abcdefghij') for _ in range(r.randint(2, 9))) for _ in range(5000)]
with open('$TMP/data.txt', 'w') as f:
    n = 0
    while n < 32 << 20:
        line = ' '.join(r.choice(words) for _ in range(12)) + '\n'; f.write(line); n += len(line)
"
pagesync-sim trace record --interval 10ms -o "$OUT/gzip.npz" -- sh -c "exec gzip -9 -c $TMP/data.txt > $TMP/data.gz"

# 3. CPython: build a 100k-entry dict of strings, sort a list, rebuild (allocator churn, a growing heap).
pagesync-sim trace record --interval 10ms -o "$OUT/python.npz" -- python3 -c "
d = {}
for i in range(100000):
    d['k%d' % (i * 7919 % 1000003)] = [i, str(i)]
s = sorted(d.items())
d2 = {k: v[0] * 2 for k, v in s}
print(len(d2))
"

# 4. redis-server (no persistence, loopback only) under redis-benchmark: SET/GET/LPUSH/INCR.
pagesync-sim trace record --interval 10ms -o "$OUT/redis.npz" -- redis-server --port 6399 --bind 127.0.0.1 \
    --save '' --appendonly no --daemonize no &
REC=$!
for i in $(seq 50); do redis-cli -p 6399 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-benchmark -p 6399 -q -n 200000 -r 100000 -d 128 -c 20 -t set,get,lpush,incr
redis-cli -p 6399 shutdown nosave || true
wait $REC
ls -l "$OUT"
