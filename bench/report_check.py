"""Render a run's report.html in headless Chromium: the DOM Chromium built (every segment's
section, the charts) and a screenshot. Prints one JSON line.

    .venv/bin/python bench/report_check.py artifacts --screenshot docs/report.png
    .venv/bin/python bench/report_check.py artifacts --section hierarchy --height 720 \
        --screenshot docs/tree.png

Needs a Chromium binary (Debian: `apt-get install chromium`; or --chromium PATH).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="raypipe-chromium-")
    try:
        return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                               "--hide-scrollbars", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _section_page(source: str, section: str, page: str) -> str:
    """A page of the report's head and one section, for a screenshot of that section."""
    start = source.index(f"<section id='{section}'>")
    body = source[start:source.index("</section>", start) + len("</section>")]
    path = page.replace(".html", f"-{section}.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source[:source.index("<body>") + 6] + body + "</body></html>")
    return "file://" + os.path.abspath(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts")
    ap.add_argument("--screenshot", help="PNG to write (the page's first 1280 x HEIGHT px)")
    ap.add_argument("--section", help="screenshot this section alone (e.g. hierarchy)")
    ap.add_argument("--height", type=int, default=2400, help="screenshot height in px")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = ap.parse_args()
    from raypipe.readouts.report import write
    page = write(args.artifacts, os.path.join(tempfile.mkdtemp(), "report.html"))
    url = "file://" + os.path.abspath(page)
    dom = chromium(args.chromium, "--dump-dom", url)
    errors = [line for line in dom.stderr.splitlines()
              if "CONSOLE" in line or "Uncaught" in line]
    with open(page, encoding="utf-8") as f:
        source = f.read()
    segments = re.findall(r"id='segment-(\d+)'", source)
    result = {"bench": "report", "bytes": len(source), "exit_code": dom.returncode,
              "segments": len(segments),
              "segments_in_dom": len(re.findall(r'id="segment-\d+"', dom.stdout)),
              "svg_in_dom": dom.stdout.count("<svg"),
              "tree_nodes_in_dom": dom.stdout.count("<summary>"),
              "console_errors": errors}
    if args.screenshot:
        shot = chromium(args.chromium, f"--screenshot={os.path.abspath(args.screenshot)}",
                        f"--window-size=1280,{args.height}",
                        _section_page(source, args.section, page) if args.section else url)
        result["screenshot"] = args.screenshot if shot.returncode == 0 else shot.stderr[-500:]
    print(json.dumps(result))
    if dom.returncode != 0 or result["segments_in_dom"] != len(segments) or errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
