#!/usr/bin/env python3
"""Per-op instructions of two callgrind runs, grouped by package.

Usage: callgrind-groups.py A_small.out A_large.out B_small.out B_large.out OPS

Each pair is one benchmark (BenchmarkHitInstructions, impl A and impl B)
run under valgrind --tool=callgrind at two -test.benchtime counts that
differ by OPS: the self cost of every function at the larger count minus
that at the smaller, divided by OPS, is what one op costs without the
set-up. It prints those costs summed by group of functions, for A and B
and their difference (docs/hitpath-benchstat.txt, hit14e A).
"""
import re
import subprocess
import sys


def load(fn):
    out = subprocess.run(['callgrind_annotate', '--threshold=100', fn],
                         capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in out.split('file:function', 1)[1].split('\n')[2:]:
        m = re.match(r'\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*)', line)
        if not m:
            if costs:
                break
            continue
        name = re.sub(r'\s*\[/[^\]]*\]', '', m.group(2))
        costs[name] = costs.get(name, 0) + int(m.group(1).replace(',', ''))
    return costs


GROUPS = [
    ('cacheaside root package', r'/cacheaside[^/]*/[a-z]+\.go:|wt-[^/]*/[a-z]+\.go:'),
    ('internal/flight', r'internal/flight'),
    ('internal/readbatch', r'internal/readbatch'),
    ('internal/redisguard', r'internal/redisguard'),
    ('internal/envelope (+ encoding/binary)', r'internal/envelope|encoding/binary'),
    ('tagclock.Parse + strconv.ParseUint', r'tagclock|strconv.ParseUint|strconv/number'),
    ('internal/other', r'/internal/(counter|l1|protocol|refcount|replay|audit|restart)/'),
    ('gobreaker', r'gobreaker'),
    ('go-redis', r'go-redis'),
    ('encoding/json', r'encoding/json|reflect'),
    ('malloc/gc', r'runtime/(malloc|mbitmap|mgc|mheap|mcache|mspan|memclr|mwbbuf|mfinal|mstats|msize|arena)'
                  r'|scanblock|scanobject|greyobject|findObject|heapBits|wbBuf|gcDrain'),
    ('sync, atomic, context, time', r'/src/(sync|context|time)/|runtime/time|nanotime|_test\.go'),
    ('runtime scheduler, netpoll, syscalls', r'runtime/(proc|netpoll|lock|sema|chan|select|stack|asm|sys_linux'
                                             r'|os_linux|signal|preempt|trace|runtime)|syscall|internal/poll|/net/|futex'),
    ('other (maps, bufio, memmove, ...)', r'.'),
]


def main():
    a1, a2, b1, b2 = (load(f) for f in sys.argv[1:5])
    ops = float(sys.argv[5])
    totals = {g: [0.0, 0.0] for g, _ in GROUPS}
    for name in set(a1) | set(a2) | set(b1) | set(b2):
        a = (a2.get(name, 0) - a1.get(name, 0)) / ops
        b = (b2.get(name, 0) - b1.get(name, 0)) / ops
        for g, pat in GROUPS:
            if re.search(pat, name):
                totals[g][0] += a
                totals[g][1] += b
                break
    print(f"{'group':40s} {'A':>8} {'B':>8} {'A-B':>8}")
    for g, _ in GROUPS:
        a, b = totals[g]
        print(f"{g:40s} {a:8.0f} {b:8.0f} {a - b:8.0f}")
    ta = sum(v[0] for v in totals.values())
    tb = sum(v[1] for v in totals.values())
    print(f"{'total':40s} {ta:8.0f} {tb:8.0f} {ta - tb:8.0f}")


if __name__ == '__main__':
    main()
