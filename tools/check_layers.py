#!/usr/bin/env python3
"""Keeps the layer map at the top of src/chkpt.h true.

The map declares the engine's parts bottom to top, one per line, as

    [N] folder/   what it holds        (or [N] file.c at src/'s top)

A part may call into parts of a lower N only; parts sharing an N are
siblings that must not call each other. Lines of the form

    mutable: file.c symbol    why

list the zero-initialised writable globals the engine has (per-process
facts a signal handler or a clone child reads); any other is an error.

The calls are read from the code itself: every .c file under src/ is
compiled to an object and `nm` says which symbols it defines and which it
needs from other files. The check fails (exit 1, one line per problem)
when a call goes against the map, when files call each other in a circle,
when a .c file belongs to no declared part, when a declared part no longer
exists, or when an undeclared mutable global appears.

    python tools/check_layers.py [--graph]

--graph prints the calls between files (caller -> callee: symbols).
"""
import collections
import os
import re
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
MAP_FILE = os.path.join(SRC, "chkpt.h")
PART_RE = re.compile(r"^\s*\*?\s*\[(\d+)\]\s+(\S+)")
MUTABLE_RE = re.compile(r"^\s*\*?\s*mutable:\s+(\S+)\s+(\S+)")


def read_map():
    """({part: layer}, {(file, symbol)}) from the comment of src/chkpt.h."""
    parts, mutable = {}, set()
    with open(MAP_FILE, encoding="utf-8") as f:
        for line in f:
            m = PART_RE.match(line)
            if m:
                parts[m.group(2).rstrip("/")] = int(m.group(1))
                continue
            m = MUTABLE_RE.match(line)
            if m:
                mutable.add((m.group(1), m.group(2)))
    return parts, mutable


def sources():
    out = []
    for dirpath, _, names in os.walk(SRC):
        out += [os.path.relpath(os.path.join(dirpath, n), SRC)
                for n in names if n.endswith(".c")]
    return sorted(out)


def part_of(path, parts):
    """The declared part a source file belongs to, or None."""
    if path in parts:
        return path
    top = path.split("/", 1)[0]
    return top if "/" in path and top in parts else None


def symbols(files):
    """{file: (defined, needed, zero-initialised writable)} from nm."""
    dirs = sorted({SRC} | {os.path.join(SRC, os.path.dirname(f)) for f in files})
    inc = ["-I" + d for d in dirs] + ["-I" + sysconfig.get_paths()["include"]]
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files):
            obj = os.path.join(tmp, "%d.o" % i)
            subprocess.run([os.environ.get("CC", "cc"), "-std=c11", "-D_GNU_SOURCE",
                            "-O0", "-c", *inc, os.path.join(SRC, f), "-o", obj],
                           check=True)
            nm = subprocess.run(["nm", obj], check=True, capture_output=True,
                                text=True).stdout
            defined, needed, bss = set(), set(), set()
            for line in nm.splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[0] == "U":
                    needed.add(fields[1])
                elif len(fields) == 3:
                    kind, name = fields[1], fields[2]
                    if kind.isupper() and kind != "U":
                        defined.add(name)
                    if kind in "bB":
                        bss.add(name.split(".")[0])
            table[f] = (defined, needed, bss)
    return table


def calls(table):
    """{(caller, callee): sorted symbols} between different files."""
    owner = {}
    for f, (defined, _, _) in table.items():
        for s in defined:
            owner[s] = f
    edges = collections.defaultdict(set)
    for f, (_, needed, _) in table.items():
        for s in needed:
            if s in owner and owner[s] != f:
                edges[(f, owner[s])].add(s)
    return {k: sorted(v) for k, v in edges.items()}


def circles(files, edges):
    """Strongly connected groups of more than one file (Tarjan)."""
    succ = collections.defaultdict(list)
    for a, b in edges:
        succ[a].append(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in files:
        if v not in index:
            visit(v)
    return out


def main(argv):
    parts, mutable = read_map()
    problems = []
    if not parts:
        problems.append("%s: no layer map ([N] part lines) found" % MAP_FILE)
    files = sources()
    for p in sorted(parts):
        if not os.path.exists(os.path.join(SRC, p)):
            problems.append("declared part %s no longer exists under src/" % p)
    for f in files:
        if part_of(f, parts) is None:
            problems.append("src/%s belongs to no part of the map" % f)
    table = symbols(files)
    edges = calls(table)
    for (a, b), syms in sorted(edges.items()):
        pa, pb = part_of(a, parts), part_of(b, parts)
        if pa is None or pb is None or pa == pb:
            continue
        if parts[pa] <= parts[pb]:
            how = "a sibling" if parts[pa] == parts[pb] else "a higher part"
            problems.append("src/%s (%s, layer %d) calls %s src/%s (%s, layer %d): %s"
                            % (a, pa, parts[pa], how, b, pb, parts[pb],
                               ", ".join(syms)))
    for group in circles(files, edges):
        problems.append("files calling each other in a circle: %s"
                        % " -> ".join("src/" + g for g in group))
    for f, (_, _, bss) in sorted(table.items()):
        for s in sorted(bss):
            if (os.path.basename(f), s) not in mutable and (f, s) not in mutable:
                problems.append("src/%s: mutable global %s is not declared in the map"
                                % (f, s))
    if "--graph" in argv:
        for (a, b), syms in sorted(edges.items()):
            print("%s -> %s: %s" % (a, b, ", ".join(syms)))
    for p in problems:
        print("check_layers: " + p)
    if not problems:
        print("check_layers: %d files in %d parts, %d calls between files, all one way"
              % (len(files), len(parts), len(edges)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
