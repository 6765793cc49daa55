#!/usr/bin/env python3
"""Extract Jane Austen's novels as plain text from Debian's r-cran-janeaustenr.

    python3 scripts/extract_austen.py OUT_DIR [BOOK ...]
    python3 scripts/extract_austen.py --rdb PATH/Rdata.rdb OUT_DIR persuasion

BOOK is one of: emma, mansfield_park, northanger_abbey, persuasion,
pride_and_prejudice, sense_and_sensibility (default: all six). Writes
OUT_DIR/<book>.txt. Without --rdb the package is fetched with
`apt-get download r-cran-janeaustenr` into a temporary folder and unpacked with
`dpkg -x` (R is not needed, nothing is installed).

It does not touch the words. Cleaning is light: each paragraph's wrapped lines
are joined into one line, paragraphs are separated by exactly one blank line,
runs of spaces become one space, and the _underscores_ marking italics are
dropped. Standard library only (zlib, struct).

Rdata.rdb is a sequence of records [u32 big-endian length][zlib stream]. Each
record inflates to an R XDR serialization ("X\\n", three version ints, the
native encoding) of one character vector (STRSXP, type 16): an i32 count, then
per line a CHARSXP: u32 flags whose low byte is 9, an i32 length (-1 for NA),
and the bytes (UTF-8). A novel's first line is its title, which names it.
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

RDB_IN_PACKAGE = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
BOOKS = {
    "EMMA": "emma",
    "MANSFIELD PARK": "mansfield_park",
    "NORTHANGER ABBEY": "northanger_abbey",
    "PERSUASION": "persuasion",
    "PRIDE AND PREJUDICE": "pride_and_prejudice",
    "SENSE AND SENSIBILITY": "sense_and_sensibility",
}


def fail(msg):
    sys.exit(f"extract_austen: {msg}")


def records(data, path):
    """Yields the inflated records of an .rdb file."""
    off = 0
    while off < len(data):
        if off + 4 > len(data):
            fail(f"{path}: truncated record header at offset {off}")
        z = zlib.decompressobj()
        try:
            raw = z.decompress(data[off + 4:])
        except zlib.error as e:
            fail(f"{path}: record at offset {off}: {e}")
        if not z.eof:
            fail(f"{path}: record at offset {off} ends mid-stream")
        yield raw
        off = len(data) - len(z.unused_data)


def strings(raw):
    """The lines of one serialized R character vector (None for NA)."""
    if raw[:2] != b"X\n":
        raise ValueError("not an XDR serialization")
    p = 2
    version = struct.unpack(">i", raw[p:p + 4])[0]
    p += 12
    if version == 3:  # native encoding name
        n = struct.unpack(">i", raw[p:p + 4])[0]
        p += 4 + n
    flags, count = struct.unpack(">Ii", raw[p:p + 8])
    p += 8
    if flags & 0xFF != 16:
        raise ValueError(f"not a character vector (type {flags & 0xFF})")
    out = []
    for i in range(count):
        flags, length = struct.unpack(">Ii", raw[p:p + 8])
        p += 8
        if flags & 0xFF != 9:
            raise ValueError(f"element {i} is not a CHARSXP (type {flags & 0xFF})")
        if length < 0:
            out.append(None)
            continue
        out.append(raw[p:p + length].decode("utf-8"))
        p += length
    return out


def clean(lines):
    """One line per paragraph, one blank line between paragraphs."""
    paragraphs, cur = [], []
    for line in lines:
        line = (line or "").strip()
        if not line:
            if cur:
                paragraphs.append(" ".join(cur))
                cur = []
            continue
        cur.append(line)
    if cur:
        paragraphs.append(" ".join(cur))
    out = []
    for p in paragraphs:
        p = p.replace("_", "")
        p = re.sub(r" {2,}", " ", p)
        out.append(p)
    return "\n\n".join(out) + "\n"


def fetch_rdb(tmp):
    """apt-get download + dpkg -x the package; returns the path of Rdata.rdb."""
    try:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"apt-get download r-cran-janeaustenr failed ({e}); pass --rdb PATH instead")
    debs = [f for f in os.listdir(tmp) if f.endswith(".deb")]
    if not debs:
        fail("apt-get download r-cran-janeaustenr produced no .deb")
    subprocess.run(["dpkg", "-x", debs[0], "x"], cwd=tmp, check=True)
    print(f"extract_austen: using {debs[0]}", file=sys.stderr)
    return os.path.join(tmp, "x", RDB_IN_PACKAGE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rdb", help="path of janeaustenr's data/Rdata.rdb (default: fetch the Debian package)")
    ap.add_argument("out_dir")
    ap.add_argument("books", nargs="*", help="books to write (default: all): " + ", ".join(BOOKS.values()))
    args = ap.parse_args()
    wanted = set(args.books or BOOKS.values())
    unknown = wanted - set(BOOKS.values())
    if unknown:
        fail(f"unknown book(s) {', '.join(sorted(unknown))}; known: {', '.join(BOOKS.values())}")

    with tempfile.TemporaryDirectory() as tmp:
        rdb = args.rdb or fetch_rdb(tmp)
        try:
            with open(rdb, "rb") as f:
                data = f.read()
        except OSError as e:
            fail(f"{rdb}: {e.strerror}")
        os.makedirs(args.out_dir, exist_ok=True)
        written = set()
        for i, raw in enumerate(records(data, rdb)):
            try:
                lines = strings(raw)
            except (ValueError, struct.error, UnicodeDecodeError) as e:
                fail(f"{rdb}: record {i}: {e}")
            title = (lines[0] or "").strip().upper() if lines else ""
            name = BOOKS.get(title)
            if name is None:
                fail(f"{rdb}: record {i} starts with {title!r}, not a known title")
            if name not in wanted:
                continue
            path = os.path.join(args.out_dir, name + ".txt")
            text = clean(lines)
            tmp_path = path + ".tmp"
            with open(tmp_path, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            os.replace(tmp_path, path)
            written.add(name)
            print(f"{path}: {len(text.encode('utf-8'))} bytes", file=sys.stderr)
        missing = wanted - written
        if missing:
            fail(f"{rdb}: no record for {', '.join(sorted(missing))}")


if __name__ == "__main__":
    main()
