"""Regenerate the codec fixtures with barman-cloud's own compression code.

Run with the Python that has barman installed (e.g. /tmp/barman-venv/bin/python):

    python make_fixtures.py

Each fixture is the exact bytes `barman.clients.cloud_compression.compress`
produces at barman's default level, which is what barman-cloud-wal-archive
uploads. The tests in src/compression.rs decode them and compare the result's
length and SHA-256 with the values printed here.
"""

import gzip
import hashlib
import io
import os

from barman.clients.cloud_compression import compress

HERE = os.path.dirname(os.path.abspath(__file__))


def payload():
    # A small stand-in for a WAL segment: mostly zeros, a page-header-like
    # pattern every 8 KiB and some text, 200,000 bytes in all (so snappy and
    # lz4 need several 64 KiB chunks/blocks).
    buf = bytearray(200_000)
    for page in range(0, len(buf), 8192):
        buf[page : page + 8] = bytes([0x18, 0xD1, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00])
        text = b"walship fixture page %d " % (page // 8192)
        buf[page + 40 : page + 40 + len(text) * 4] = text * 4
    return bytes(buf)


def main():
    data = payload()
    print("payload len", len(data), "sha256", hashlib.sha256(data).hexdigest())
    ext = {"gzip": "gz", "bzip2": "bz2", "xz": "xz", "snappy": "snappy", "zstd": "zst", "lz4": "lz4"}
    for name, e in ext.items():
        out = compress(io.BytesIO(data), name, None).read()
        with open(os.path.join(HERE, "payload.%s" % e), "wb") as f:
            f.write(out)
        print(name, len(out), out[:16].hex())
    # Multi-member gzip: two members, as `cat a.gz b.gz` or some pigz modes produce.
    a, b = data[:100_000], data[100_000:]
    multi = gzip.compress(a, 6, mtime=0) + gzip.compress(b, 6, mtime=0)
    with open(os.path.join(HERE, "payload-multi.gz"), "wb") as f:
        f.write(multi)
    print("multi-gzip", len(multi))


if __name__ == "__main__":
    main()
