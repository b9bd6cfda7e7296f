#!/usr/bin/env python3
"""Makes every reading of `benchtool lines` unique, so a database count can tell a point
that arrived twice (a retried write) from two points: appends the line's index as six more
decimals to each number in the node objects (n1, n2, sig, sts; not the top-level "ts").
   "t":20.0 -> "t":20.0000042    "g":82447 -> "g":82447.000042    "rssi":-33 -> "rssi":-33.000042
Usage: benchtool lines ... | unique-values.py [--buffered] [FIRST_INDEX=0]: one line in, one
line out, flushed at once so a paced feeder stays paced (--buffered: in 8 KiB writes, as
`benchtool lines` writes when not paced). Indexes must stay below 1,000,000.
"""
import re
import sys

NODE = re.compile(r'("(?:n\d+|sig|sts)":\{)([^{}]*)(\})')
NUMBER = re.compile(r'("\w+":)(-?\d+)(\.\d+)?')


def main():
    args = sys.argv[1:]
    buffered = "--buffered" in args
    args = [a for a in args if a != "--buffered"]
    i = int(args[0]) if args else 0
    out = open(sys.stdout.fileno(), "w", buffering=8192, closefd=False) if buffered else sys.stdout
    while True:
        line = sys.stdin.readline()
        if not line:
            out.flush()
            return
        suffix = f"{i:06d}"

        def number(m):
            return m.group(1) + m.group(2) + (m.group(3) or ".") + suffix

        line = NODE.sub(lambda m: m.group(1) + NUMBER.sub(number, m.group(2)) + m.group(3), line)
        out.write(line)
        if not buffered:
            out.flush()
        i += 1


if __name__ == "__main__":
    try:
        main()
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(0)
