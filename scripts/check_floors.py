#!/usr/bin/env python3
"""Checks that every #include "..." of the non-test C++ sources stays on its
floor: a file of room R may include files of R and of the rooms that
scripts/floors.txt lists for R, nothing else (in the manner of Chromium's
checkdeps). Fails, printing each offending line, on an include outside the
table, on a source in no room, on a table that names an unknown room, and on a
table whose rooms loop. A room is a folder, or one file: a header that only
the rooms listing it may include.

  scripts/check_floors.py              # check the tree (CI)
  scripts/check_floors.py --picture    # the floors and the arrows in use
  scripts/check_floors.py --self-test  # the checker against made-up trees
  scripts/check_floors.py --root DIR --table FILE
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

SOURCE_SUFFIXES = (".cc", ".h", ".cu", ".cuh")
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"')
# Generated from protos/<stem>.proto: include "<stem>.pb.h" or "<stem>.grpc.pb.h".
PROTO_SUFFIXES = (".grpc.pb.h", ".pb.h")
PROTOS_ROOM = "protos"
UNCHECKED = ("tests/",)


class Table:
    def __init__(self, allowed, order):
        self.allowed = allowed  # room -> set of rooms it may include
        self.order = order      # rooms in the order the table lists them

    def room_of(self, path):
        """The longest room that prefixes `path` (or is `path`: a room of one file), or None."""
        best = None
        for room in self.allowed:
            if ((path == room or path.startswith(room + "/")) and
                    (best is None or len(room) > len(best))):
                best = room
        return best


def read_table(path):
    allowed, order, errors = {}, [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            room, sep, rest = line.partition(":")
            room = room.strip().rstrip("/")
            if not sep or not room or room in allowed:
                errors.append("%s:%d: expected a new 'room: rooms...'" % (path, number))
                continue
            allowed[room] = {r.rstrip("/") for r in rest.split()}
            order.append(room)
    for room in order:
        for other in sorted(allowed[room]):
            if other not in allowed:
                errors.append("%s: room %s names unknown room %s" % (path, room, other))
    errors.extend(find_loops(allowed))
    return Table(allowed, order), errors


def find_loops(allowed):
    """One error per loop among the rooms (a depth-first search)."""
    errors, state = [], {}  # room -> "open" | "done"

    def visit(room, stack):
        state[room] = "open"
        for other in sorted(allowed.get(room, ())):
            if state.get(other) == "open":
                loop = stack[stack.index(other):] + [other]
                errors.append("floors table loops: " + " -> ".join(loop))
            elif other in allowed and other not in state:
                visit(other, stack + [other])
        state[room] = "done"

    for room in allowed:
        if room not in state:
            visit(room, [room])
    return errors


def sources(root):
    """Non-test C++ sources, relative to root: git's list where root is a checkout."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True,
                             text=True).stdout.split("\n")
        if not os.path.samefile(
                subprocess.run(["git", "-C", root, "rev-parse", "--show-toplevel"],
                               check=True, capture_output=True, text=True).stdout.strip(),
                root):
            raise subprocess.CalledProcessError(1, "git")
    except (subprocess.CalledProcessError, FileNotFoundError):
        out = []
        for base, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith((".", "build"))]
            out.extend(os.path.relpath(os.path.join(base, f), root) for f in files)
    return sorted(p for p in out if p.endswith(SOURCE_SUFFIXES) and not p.startswith(UNCHECKED)
                  and os.path.isfile(os.path.join(root, p)))


def target_room(root, table, include):
    """The room of an included path; None for a header outside the project."""
    if os.path.isfile(os.path.join(root, include)):
        return table.room_of(include) or "(no room)"
    for suffix in PROTO_SUFFIXES:
        if include.endswith(suffix):
            stem = include[:-len(suffix)]
            if os.path.isfile(os.path.join(root, PROTOS_ROOM, stem + ".proto")):
                return PROTOS_ROOM
    if table.room_of(include):
        return "(missing file)"
    return None  # absl/..., nlohmann/..., google/protobuf/...


def check(root, table):
    """(errors, arrows): offending lines, and room -> rooms it includes."""
    errors, arrows = [], {}
    for path in sources(root):
        room = table.room_of(path)
        if room is None:
            errors.append("%s: in no room of the floors table" % path)
            continue
        with open(os.path.join(root, path), errors="replace") as f:
            for number, line in enumerate(f, 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                other = target_room(root, table, match.group(1))
                if other is None or other == room:
                    continue
                arrows.setdefault(room, set()).add(other)
                if other not in table.allowed[room]:
                    errors.append("%s:%d: %s may not include %s: %s" %
                                  (path, number, room, other, line.strip()))
    return errors, arrows


def floors(table):
    """room -> floor number: 0 for a room that includes no other, else 1 + the highest below."""
    level = {}

    def floor(room):
        if room not in level:
            level[room] = 1 + max((floor(r) for r in table.allowed[room]), default=-1)
        return level[room]

    for room in table.order:
        floor(room)
    return level


def print_picture(table, arrows):
    level = floors(table)
    for n in range(max(level.values(), default=-1), -1, -1):
        for room in (r for r in table.order if level[r] == n):
            used = sorted(arrows.get(room, ()), key=lambda r: (-level[r], r))
            print("floor %d  %-18s -> %s" % (n, room, " ".join(used) or "-"))


def self_test():
    """The checker against made-up trees: a clean one passes; a loop in the
    table, an include back up, a file in no room and a missing file fail."""
    cases = [
        # (name, table, {path: text}, expected substrings of errors or [] for a pass)
        ("clean", "protos:\nlow: protos\nhigh/a: low\nhigh/b: high/a low\n",
         {"low/x.h": "", "low/x.cc": '#include "low/x.h"\n#include "absl/x.h"\n',
          "high/a/y.h": '#include "low/x.h"\n', "high/b/z.cc": '#include "high/a/y.h"\n',
          "low/p.cc": '#include "nanoserve/v1/p.grpc.pb.h"\n', "protos/nanoserve/v1/p.proto": "",
          "tests/t.cc": '#include "high/b/z.cc"\n'}, []),
        ("back up", "low:\nhigh: low\n",
         {"low/x.cc": '#include "high/y.h"\n', "high/y.h": ""},
         ['low/x.cc:1: low may not include high: #include "high/y.h"']),
        ("sibling", "low:\nhigh/a: low\nhigh/b: low\n",
         {"high/a/x.cc": '\n#include "high/b/y.h"\n', "high/b/y.h": ""},
         ["high/a/x.cc:2: high/a may not include high/b"]),
        ("proto from the ground", "protos:\nlow:\n",
         {"low/x.cc": '#include "nanoserve/v1/p.pb.h"\n', "protos/nanoserve/v1/p.proto": ""},
         ["low/x.cc:1: low may not include protos"]),
        ("no room", "low:\n", {"other/x.cc": ""}, ["other/x.cc: in no room"]),
        ("one-file room", "low/edge.h:\nlow: low/edge.h\nmid: low\nhigh: low/edge.h low\n",
         {"low/edge.h": "", "low/x.cc": '#include "low/edge.h"\n',
          "high/y.cc": '#include "low/edge.h"\n', "mid/z.cc": '#include "low/edge.h"\n'},
         ['mid/z.cc:1: mid may not include low/edge.h']),
        ("missing file", "low:\nhigh: low\n", {"low/x.cc": '#include "high/gone.h"\n'},
         ["low/x.cc:1: low may not include (missing file)"]),
        ("loop", "a: b\nb: c\nc: a\n", {}, ["floors table loops: a -> b -> c -> a"]),
        ("unknown room", "a: nowhere\n", {}, ["room a names unknown room nowhere"]),
    ]
    failures = 0
    for name, table_text, files, expected in cases:
        with tempfile.TemporaryDirectory() as root:
            for path, text in files.items():
                os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
                with open(os.path.join(root, path), "w") as f:
                    f.write(text)
            table_path = os.path.join(root, "floors.txt")
            with open(table_path, "w") as f:
                f.write(table_text)
            table, errors = read_table(table_path)
            if not errors:
                errors, _ = check(root, table)
        ok = (not errors) if not expected else all(
            any(e_sub in e for e in errors) for e_sub in expected)
        if not ok:
            failures += 1
            print("self-test %s: FAILED; expected %s, got %s" % (name, expected or "a pass",
                                                                  errors or "a pass"))
    print("check_floors self-test: %d of %d cases pass" % (len(cases) - failures, len(cases)))
    return failures == 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.dirname(here))
    parser.add_argument("--table", default=os.path.join(here, "floors.txt"))
    parser.add_argument("--picture", action="store_true")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return 0 if self_test() else 1
    table, errors = read_table(args.table)
    if not errors:
        errors, arrows = check(args.root, table)
    for e in errors:
        print(e)
    if errors:
        print("floors: %d include(s) outside %s" % (len(errors), os.path.relpath(args.table)))
        return 1
    if args.picture:
        print_picture(table, arrows)
    else:
        print("floors: %d sources, every include on its floor" % len(sources(args.root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
