#!/usr/bin/env python3
"""Generate the serve benchmark's three files, deterministically.

Usage: bench/gen_serve_site.py OUT_DIR [--seed 20240601]

Writes into OUT_DIR (created, emptied of these three names first):

  * index.html: exactly 1,024 bytes, a small HTML page (head, nav, a few
    paragraphs), padded to the byte with an HTML comment.
  * app.js: exactly 102,400 bytes of JavaScript-like text (functions, objects,
    string literals, numbers built from templates with varied identifiers),
    so it compresses like a real bundle (gzip -9 takes it to roughly a
    quarter of its size, not to almost nothing).
  * big.bin: exactly 1,048,576 random (incompressible) bytes.

The same seed always produces byte-identical files. Prints one JSON line
with each file's size.
"""

import argparse
import json
import os
import random

HTML_SIZE = 1024
JS_SIZE = 100 * 1024
BIN_SIZE = 1024 * 1024

WORDS = (
    "static site deploy edge cache content hash blob manifest branch preview rollback publish "
    "server client request response header body latency throughput bandwidth storage upload "
    "download compress index page route domain proxy origin region build release version "
    "change commit review merge user team project document guide option setting value"
).split()

VERBS = "get set make load save parse render update handle create remove fetch format check apply".split()
NOUNS = (
    "user item list node state config route token cache entry value event view page form field "
    "query result error option header body record session layout theme"
).split()


def ident(rng):
    return rng.choice(VERBS) + rng.choice(NOUNS).capitalize() + rng.choice(["", "s", "At", "By", "For", str(rng.randint(0, 99))])


def js_function(rng):
    name = ident(rng)
    args = [rng.choice(NOUNS) for _ in range(rng.randint(0, 3))]
    a = args[0] if args else "this"
    lines = []
    for _ in range(rng.randint(2, 7)):
        kind = rng.randrange(6)
        v = rng.choice(NOUNS) + str(rng.randint(0, 999))
        if kind == 0:
            lines.append(f"  const {v} = {a}?.{rng.choice(NOUNS)} ?? {rng.randint(0, 65535)};")
        elif kind == 1:
            msg = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
            lines.append(f'  if (!{a}) throw new Error("{name}: {msg}");')
        elif kind == 2:
            lines.append(f"  for (let i = 0; i < {a}.length; i += {rng.randint(1, 8)}) {{ {ident(rng)}({a}[i], i); }}")
        elif kind == 3:
            keys = ", ".join(f"{rng.choice(NOUNS)}: {rng.choice(['null', 'true', 'false', str(rng.randint(0, 9999)), repr(rng.choice(WORDS))])}" for _ in range(rng.randint(1, 4)))
            lines.append(f"  const {v} = {{ {keys} }};")
        elif kind == 4:
            lines.append(f"  {a}.{rng.choice(NOUNS)} = {ident(rng)}({a}, 0x{rng.getrandbits(24):06x});")
        else:
            lines.append(f"  await {ident(rng)}(`/api/v1/{rng.choice(NOUNS)}s/${{{a}.id}}`, {{ method: \"{rng.choice(['GET', 'POST', 'PUT'])}\" }});")
    lines.append(f"  return {a};")
    lines.append("}")
    asynchronous = "async " if any("await " in line for line in lines) else ""
    lines.insert(0, f"export {asynchronous}function {name}({', '.join(args)}) {{")
    return "\n".join(lines) + "\n"


def make_js(rng):
    out = ['"use strict";\n/* app.js: generated for bench/serve */\n']
    size = len(out[0])
    while size < JS_SIZE:
        f = js_function(rng)
        out.append(f)
        size += len(f)
    text = "".join(out)[: JS_SIZE - 1]
    return (text + "\n").encode()


def make_html(rng):
    paras = []
    for _ in range(3):
        paras.append("<p>" + " ".join(rng.choice(WORDS) for _ in range(18)) + ".</p>")
    head = (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>chanto serve benchmark</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n"
        "<nav><a href=\"/\">Home</a> <a href=\"/docs/\">Docs</a> <a href=\"/blog/\">Blog</a></nav>\n<main>\n"
        "<h1>Serve benchmark</h1>\n"
    )
    tail = "</main>\n<script src=\"/app.js\" defer></script>\n</body>\n</html>\n"
    body = head + "\n".join(paras) + "\n"
    pad = HTML_SIZE - len((body + tail).encode()) - len("<!--  -->\n")
    if pad < 0:
        body = body[: HTML_SIZE - len(tail) - len("<!--  -->\n")]
        pad = 0
    text = body + "<!-- " + "x" * pad + " -->\n" + tail
    data = text.encode()
    assert len(data) == HTML_SIZE, len(data)
    return data


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    files = {"index.html": make_html(rng), "app.js": make_js(rng), "big.bin": rng.randbytes(BIN_SIZE)}
    for name, data in files.items():
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
    print(json.dumps({name: len(data) for name, data in files.items()}))


if __name__ == "__main__":
    main()
