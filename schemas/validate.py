#!/usr/bin/env python3
"""Validate JSON documents against a signet schema.

Usage: validate.py SCHEMA FILE...

Each FILE holds one JSON document, or JSON lines (one document per non-empty line, as
`signet events` prints them); `-` reads standard input. Exits 0 when every document is
valid; otherwise prints the first error to stderr and exits 1 (2 for usage, unreadable
files, malformed JSON or an invalid schema).

Needs the `jsonschema` package (draft 2020-12). Regular expressions get ECMA-262 semantics
for `$` (end of input only; Python's `$` would also match before a final newline).
"""

import json
import re
import sys

try:
    import jsonschema
    from jsonschema import Draft202012Validator, ValidationError, validators
except ImportError:  # pragma: no cover
    sys.exit("validate.py: needs the jsonschema package (pip install jsonschema)")


def _ecma(pattern):
    """Rewrites unescaped `$` outside character classes as `\\Z` (ECMA-262: end of input)."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


_compiled = {}


def _pattern(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    rx = _compiled.get(pattern)
    if rx is None:
        rx = _compiled[pattern] = re.compile(_ecma(pattern))
    if not rx.search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = validators.extend(Draft202012Validator, validators={"pattern": _pattern})


def _documents(path):
    """Yields (label, document) for each document in `path`."""
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        yield path, json.loads(text)
        return
    except json.JSONDecodeError:
        pass
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not JSON: {e}") from None
            yield f"{path}:{n}", doc


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            schema = json.load(f)
        Validator.check_schema(schema)
    except (OSError, json.JSONDecodeError, jsonschema.SchemaError) as e:
        print(f"{argv[1]}: unusable schema: {e}", file=sys.stderr)
        return 2
    v = Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    count = 0
    for path in argv[2:]:
        try:
            docs = list(_documents(path))
        except (OSError, UnicodeDecodeError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 2
        except SystemExit as e:
            print(e, file=sys.stderr)
            return 2
        if not docs:
            print(f"{path}: no JSON document", file=sys.stderr)
            return 2
        for label, doc in docs:
            err = jsonschema.exceptions.best_match(v.iter_errors(doc))
            if err is not None:
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                print(f"{label}: {where}: {err.message}", file=sys.stderr)
                return 1
            count += 1
    print(f"{count} document(s) valid against {argv[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
