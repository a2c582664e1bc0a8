#!/usr/bin/env python3
"""Seeds the fuzz corpora from the real captures in ../shared/data.

    python3 bgp/fuzz/seed_corpus.py [DATA_DIR]   # default: /work/shared/data,
                                                 # or $PETREL_DATA
Writes one file per whole BGP message (header included) into
bgp/fuzz/corpus/{decode_message,roundtrip}/: every message of the pcap TSV
and a sample of UPDATEs from each MRT update dump (BGP4MP and BGP4MP_ET,
RFC 6396 §4.4). The corpus is not committed; rerun this to rebuild it.
"""
import bz2, gzip, hashlib, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PETREL_DATA", "/work/shared/data")
PER_DUMP = 400  # UPDATEs kept per MRT file: the smallest, largest and a spread

def pcap_messages():
    with open(os.path.join(DATA, "pcap/bgp_messages_from_pcaps.tsv")) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7 or line.startswith(("#", "file")):
                continue
            yield bytes.fromhex(cols[6])

def mrt_messages(path):
    """BGP messages of BGP4MP(_ET) MESSAGE records (RFC 6396 §4.4.2-3)."""
    opener = gzip.open if path.endswith(".gz") else bz2.open
    with opener(path, "rb") as f:
        data = f.read()
    p = 0
    while p + 12 <= len(data):
        _ts, mtype, sub, length = struct.unpack_from(">IHHI", data, p)
        body = data[p + 12 : p + 12 + length]
        p += 12 + length
        if mtype == 17:  # BGP4MP_ET: 4 octets of microseconds first
            body = body[4:]
        if mtype not in (16, 17) or sub not in (1, 4, 6, 7):
            continue
        asw = 4 if sub in (4, 7) else 2
        q = 2 * asw + 2
        (afi,) = struct.unpack_from(">H", body, q)
        q += 2 + 2 * (16 if afi == 2 else 4)
        yield body[q:]

def main():
    seeds = list(pcap_messages())
    for name in sorted(os.listdir(DATA)):
        if ".updates" not in name:
            continue
        ups = [m for m in mrt_messages(os.path.join(DATA, name)) if len(m) > 18 and m[18] == 2]
        ups.sort(key=len)
        step = max(1, len(ups) // PER_DUMP)
        seeds += ups[::step] + ups[-20:]
    for target in ("decode_message", "roundtrip"):
        out = os.path.join(HERE, "corpus", target)
        os.makedirs(out, exist_ok=True)
        for s in seeds:
            with open(os.path.join(out, hashlib.sha1(s).hexdigest()), "wb") as f:
                f.write(s)
    print(f"{len(set(seeds))} distinct seeds in {os.path.join(HERE, 'corpus')}")

if __name__ == "__main__":
    main()
