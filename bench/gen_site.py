#!/usr/bin/env python3
"""Generate the deploy benchmark's synthetic static site, deterministically.

Usage: bench/gen_site.py OUT_DIR [--files 10000] [--bytes 200000000] [--seed 20240601]

The same arguments always produce byte-identical output. The mix imitates a
real static site:

  * 60 % HTML pages, 2-8 kB each: a shared layout (head, nav, footer) around
    paragraphs drawn from a fixed pool of sentences, so pages repeat one
    another the way generated HTML does and compress like real text.
  * 20 % CSS / JS, 10-40 kB each: rules and functions built from templates
    with per-file identifiers and values.
  * 20 % images (.png / .jpg), random incompressible bytes behind the right
    magic number; their sizes are scaled so the whole site totals --bytes.

Every file's content is unique (no two blobs are equal), and files sit in
nested directories (blog/YYYY/MM/slug/index.html, docs/<section>/..., assets/...).
Prints one JSON line: {"files": N, "bytes": B, "html": .., "text_assets": .., "images": ..}.
"""

import argparse
import json
import os
import random
import shutil
import sys

WORDS = (
    "static site deploy edge cache content hash blob manifest branch preview rollback publish "
    "server client request response header body latency throughput bandwidth storage upload "
    "download compress brotli gzip index page route domain certificate proxy origin region "
    "the a an of to and in for on with by from at as is are was were be been this that these "
    "those it its our your their we you they build release version change commit review merge "
    "fast small simple reliable secure atomic instant durable parallel concurrent incremental "
    "user team project document guide tutorial reference example feature option setting value"
).split()

SECTIONS = ["guides", "reference", "tutorials", "api", "concepts", "howto", "faq", "changelog"]
CSS_PROPS = [
    "color", "background-color", "margin", "padding", "border-radius", "font-size", "line-height",
    "display", "flex-direction", "justify-content", "align-items", "gap", "width", "max-width",
    "height", "border", "box-shadow", "transition", "opacity", "z-index", "position", "top", "left",
]


def sentence(rng: random.Random) -> str:
    n = rng.randint(6, 18)
    s = " ".join(rng.choice(WORDS) for _ in range(n))
    return s[0].upper() + s[1:] + "."


def make_pool(rng: random.Random, n: int) -> list[str]:
    return [sentence(rng) for _ in range(n)]


LAYOUT_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/assets/css/{css}">
<script defer src="/assets/js/{js}"></script>
</head>
<body>
<header class="site-header"><a class="logo" href="/">Example Docs</a>
<nav class="main-nav"><ul>
<li><a href="/guides/">Guides</a></li><li><a href="/reference/">Reference</a></li>
<li><a href="/tutorials/">Tutorials</a></li><li><a href="/blog/">Blog</a></li>
<li><a href="/faq/">FAQ</a></li><li><a href="/changelog/">Changelog</a></li>
</ul></nav></header>
<main class="content" id="page-{pid}">
<h1>{title}</h1>
"""

LAYOUT_FOOT = """</main>
<footer class="site-footer"><p>&copy; 2024 Example Inc. All rights reserved.</p>
<ul class="footer-links"><li><a href="/about/">About</a></li><li><a href="/privacy/">Privacy</a></li>
<li><a href="/terms/">Terms</a></li><li><a href="/contact/">Contact</a></li></ul></footer>
</body>
</html>
"""


def html_page(rng: random.Random, pool: list[str], pid: int, title: str, css: str, js: str, img: str) -> bytes:
    target = rng.randint(2_000, 8_000)
    parts = [LAYOUT_HEAD.format(title=title, css=css, js=js, pid=pid)]
    size = len(parts[0]) + len(LAYOUT_FOOT)
    k = 0
    while size < target:
        k += 1
        if k % 4 == 0:
            chunk = f'<h2 id="s{k}">{rng.choice(pool)[:-1]}</h2>\n'
        elif k % 7 == 0:
            chunk = f'<figure><img src="/{img}" alt="{rng.choice(WORDS)}" loading="lazy"></figure>\n'
        elif k % 5 == 0:
            items = "".join(f"<li>{rng.choice(pool)}</li>" for _ in range(rng.randint(2, 5)))
            chunk = f"<ul>{items}</ul>\n"
        else:
            chunk = "<p>" + " ".join(rng.choice(pool) for _ in range(rng.randint(2, 6))) + "</p>\n"
        parts.append(chunk)
        size += len(chunk)
    parts.append(LAYOUT_FOOT)
    return "".join(parts).encode()


def css_file(rng: random.Random, fid: int, target: int) -> bytes:
    out = [f"/* bundle {fid}: generated stylesheet */\n"]
    size = len(out[0])
    while size < target:
        sel = f".{rng.choice(WORDS)}-{rng.randrange(1000)}"
        if rng.random() < 0.3:
            sel += f" > .{rng.choice(WORDS)}"
        decls = "".join(
            f"  {rng.choice(CSS_PROPS)}: {rng.choice(['#%06x' % rng.randrange(1 << 24), '%dpx' % rng.randrange(64), '%.2frem' % rng.random(), 'auto', 'flex', 'center', 'none'])};\n"
            for _ in range(rng.randint(2, 7))
        )
        rule = f"{sel} {{\n{decls}}}\n"
        out.append(rule)
        size += len(rule)
    return "".join(out).encode()


def js_file(rng: random.Random, fid: int, target: int) -> bytes:
    out = [f"// module {fid}: generated script\n'use strict';\n"]
    size = len(out[0])
    n = 0
    while size < target:
        n += 1
        name = f"{rng.choice(WORDS)}{rng.choice(WORDS).capitalize()}{n}"
        a, b = rng.choice(WORDS), rng.choice(WORDS)
        body = (
            f"export function {name}({a}, {b}) {{\n"
            f"  const result = [];\n"
            f"  for (let i = 0; i < {a}.length; i += {rng.randint(1, 9)}) {{\n"
            f"    if ({a}[i] && {a}[i].{rng.choice(WORDS)} !== {rng.randrange(10000)}) {{\n"
            f"      result.push({{ key: '{rng.choice(WORDS)}', value: {a}[i], extra: {b} }});\n"
            f"    }}\n  }}\n"
            f"  return result.length > {rng.randrange(50)} ? result : null;\n}}\n\n"
        )
        out.append(body)
        size += len(body)
    return "".join(out).encode()


PNG_MAGIC = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPG_MAGIC = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--bytes", type=int, default=200_000_000)
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    n_html = args.files * 6 // 10
    n_text = args.files * 2 // 10
    n_img = args.files - n_html - n_text

    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)

    files: dict[str, bytes] = {}

    # Text assets first, so pages can link to real ones.
    css_names, js_names = [], []
    for i in range(n_text):
        target = rng.randint(10_000, 40_000)
        group = f"{rng.choice(['vendor', 'app', 'pages', 'components', 'themes'])}/{i % 40:02d}"
        if i % 2 == 0:
            rel = f"assets/css/{group}/style-{i:05d}.css"
            files[rel] = css_file(rng, i, target)
            css_names.append(rel[len('assets/css/'):])
        else:
            rel = f"assets/js/{group}/bundle-{i:05d}.js"
            files[rel] = js_file(rng, i, target)
            js_names.append(rel[len('assets/js/'):])

    # Image paths (contents later, sized to hit the byte budget).
    img_paths = []
    for i in range(n_img):
        ext = "png" if i % 3 == 0 else "jpg"
        img_paths.append(f"images/{i % 16:x}/{(i // 16) % 16:x}/img-{i:05d}.{ext}")

    pool = make_pool(rng, 4_000)
    for i in range(n_html - 1):  # the home page is the last one
        kind = i % 3
        if kind == 0:
            year, month = 2015 + (i // 3) % 10, 1 + (i // 30) % 12
            rel = f"blog/{year}/{month:02d}/post-{i:05d}/index.html"
        elif kind == 1:
            rel = f"docs/{SECTIONS[i % len(SECTIONS)]}/{(i // 24) % 20:02d}/page-{i:05d}.html"
        else:
            rel = f"{rng.choice(SECTIONS)}/{rng.choice(WORDS)}-{i:05d}/index.html"
        title = f"{rng.choice(pool)[:-1][:60]} ({i})"
        files[rel] = html_page(rng, pool, i, title, rng.choice(css_names), rng.choice(js_names), rng.choice(img_paths))
    files["index.html"] = html_page(rng, pool, -1, "Home", css_names[0], js_names[0], img_paths[0])

    text_bytes = sum(len(v) for v in files.values())
    budget = max(args.bytes - text_bytes, n_img * 1024)
    # Skewed sizes (many small thumbnails, a few large photos), 20-200 kB,
    # then scaled so the images fill the remaining budget exactly.
    raw = [20_000 + 180_000 * rng.random() ** 2.5 for _ in range(n_img)]
    scale = budget / sum(raw)
    sizes = [max(1024, int(r * scale)) for r in raw]
    sizes[-1] += budget - sum(sizes)

    for rel, content in files.items():
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content)
    for rel, size in zip(img_paths, sizes):
        magic = PNG_MAGIC if rel.endswith(".png") else JPG_MAGIC
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(magic + rng.randbytes(size - len(magic)))

    n_files = len(files) + len(img_paths)
    total = text_bytes + sum(sizes)
    html = [v for k, v in files.items() if k.endswith(".html")]
    print(json.dumps({
        "files": n_files,
        "bytes": total,
        "html": len(html),
        "html_bytes": sum(map(len, html)),
        "text_assets": len(files) - len(html),
        "text_asset_bytes": text_bytes - sum(map(len, html)),
        "images": len(img_paths),
        "image_bytes": sum(sizes),
        "image_size_range": [min(sizes), max(sizes)],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
