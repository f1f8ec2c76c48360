#!/usr/bin/env python3
"""cg_allocs.py: heap allocations in a callgrind dump (calls into malloc, calloc, realloc from
anywhere), for bench/cpu_profile.sh. usage: cg_allocs.py CALLGRIND_FILE"""
import re
import sys

ALLOC = {"malloc", "calloc", "realloc"}
CFN = re.compile(r"cfn=\((\d+)\)(?: (.*))?")


def main(path):
    names, total, callee = {}, 0, ""
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("cfn="):
                m = CFN.match(line.strip())
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                callee = names.get(m.group(1), "") if m else ""
            elif line.startswith("fn="):
                m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
            elif line.startswith("calls=") and callee.split(" ")[0].split("'")[0] in ALLOC:
                total += int(line[6:].split()[0])
    print(total)


if __name__ == "__main__":
    main(sys.argv[1])
