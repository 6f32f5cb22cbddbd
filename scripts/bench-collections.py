#!/usr/bin/env python3
"""Block lists for bench.sh scenario 10 (collection records), from a list of
HASH+SIZE locators (one per line, every block once):

  OUT.manifests.txt    one manifest per collection (psql -At 'SELECT manifest_text')
  OUT.collections.csv  the same collections as psql's `\\copy ... csv header`:
                       uuid, replication_desired, storage_classes_desired,
                       manifest_text

Collections of 100 blocks in list order, plus one in ten collections again
as a second collection over 100 blocks drawn from the whole list (so about
10 % of the blocks are in two collections, with other wants). Replication
cycles null, 1, 2, 3; classes ["default"], ["default"], ["archive"],
["default", "archive"]. Deterministic (seeded)."""
import json
import random
import sys

src, out = sys.argv[1:3]
locs = [l.split()[0] for l in open(src) if l.strip()]
rng = random.Random(10)
REPL = [None, 1, 2, 3]
CLASSES = [["default"], ["default"], ["archive"], ["default", "archive"]]
PER = 100


def manifest(blocks):
    total = sum(int(b.split("+")[1]) for b in blocks)
    return ". " + " ".join(blocks) + f" 0:{total}:data.bin\n"


def collections():
    n = 0
    for i in range(0, len(locs), PER):
        yield n, locs[i:i + PER]
        n += 1
        if n % 10 == 0:
            yield n, [locs[rng.randrange(len(locs))] for _ in range(PER)]
            n += 1


with open(out + ".manifests.txt", "w") as m, open(out + ".collections.csv", "w") as c:
    c.write("uuid,replication_desired,storage_classes_desired,manifest_text\n")
    for n, blocks in collections():
        text = manifest(blocks)
        m.write(text)
        r = REPL[n % 4]
        classes = json.dumps(CLASSES[(n // 4) % 4]).replace('"', '""')
        c.write(f'bench-4zz18-{n:015d},{"" if r is None else r},"{classes}","{text}"\n')
