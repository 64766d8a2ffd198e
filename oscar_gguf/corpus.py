"""Real English prose for calibration and evaluation, from Debian's python3-doc.

Calibration and evaluation read disjoint, fixed, sorted document lists, so a
result can name exactly the text it was measured on (package, version, documents).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .models import cache_dir

PACKAGE = "python3-doc"
SYSTEM_HTML = Path("/usr/share/doc/python3-doc/html")
MIN_PARAGRAPH = 80  # shorter <p> are captions, labels and link lists, not prose

# Document sets by directory of the HTML tree; index pages are tables of contents.
_SPLITS = {
    "eval": ("tutorial", "faq", "reference"),
    "calib": ("howto",),
}


class CorpusError(RuntimeError):
    """The documentation could not be found or fetched; the message is one line."""


@dataclass
class Corpus:
    text: str
    package: str  # the Debian package that holds the HTML (python3-doc points at python3.X-doc)
    version: str
    documents: list[str]  # paths relative to the html root, in reading order


class _ParagraphParser(HTMLParser):
    """Collects the text of <p> elements inside Sphinx's main body div."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._div_depth = 0
        self._body_depth: int | None = None  # div depth of <div class="body" role="main">
        self._buf: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "div":
            self._div_depth += 1
            a = dict(attrs)
            if (self._body_depth is None and a.get("role") == "main"
                    and "body" in (a.get("class") or "").split()):
                self._body_depth = self._div_depth
        elif tag == "p" and self._body_depth is not None:
            self._buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "div":
            if self._div_depth == self._body_depth:
                self._body_depth = None
            self._div_depth -= 1
        elif tag == "p" and self._buf is not None:
            text = " ".join("".join(self._buf).split())
            self._buf = None
            if len(text) >= MIN_PARAGRAPH:
                self.paragraphs.append(text)

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def paragraphs(html: str) -> list[str]:
    p = _ParagraphParser()
    p.feed(html)
    p.close()
    return p.paragraphs


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{cmd[0]} not found; install {PACKAGE} (apt-get install {PACKAGE})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"{' '.join(cmd[:3])} failed: {last}")
    return proc.stdout.strip()


def fetch_html() -> Path:
    """python3-doc's HTML from the cache, unpacked from the .debs there (downloaded first if there are none,
    or carried in from another machine: scripts/gpu_bundle.py); returns the html root."""
    root = cache_dir() / "corpus"
    tree = root / PACKAGE
    html = tree / "usr/share/doc" / PACKAGE / "html"
    if html.is_dir():
        return html
    root.mkdir(parents=True, exist_ok=True)
    if not list(root.glob(f"{PACKAGE}_*.deb")):
        _download_debs(root)
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=root) as tmp:
        x = Path(tmp) / "x"
        for deb in sorted(root.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(x)])
        os.replace(x, tree)  # extraction finished: publish in one step
    if not html.is_dir():
        raise CorpusError(f"{PACKAGE} was fetched but has no HTML docs under {html}")
    return html


def _download_debs(root: Path) -> None:
    """python3-doc and the python3.X-doc it points at, into root (kept: they record the versions)."""
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=root) as tmp:
        t = Path(tmp)
        _run(["apt-get", "download", PACKAGE], cwd=t)
        (meta,) = t.glob(f"{PACKAGE}_*.deb")
        # python3-doc only holds a symlink to python3.X-doc's tree; fetch that too.
        package = _doc_package(_run(["dpkg-deb", "-f", str(meta), "Depends"]))
        if package != PACKAGE:
            _run(["apt-get", "download", package], cwd=t)
        for deb in sorted(t.glob("*.deb"), key=lambda d: d == meta):  # python3-doc, the marker, last
            os.replace(deb, root / deb.name)


def locate_html() -> Path:
    """The python3-doc HTML root: the installed one, else a copy fetched with apt-get."""
    if SYSTEM_HTML.is_dir():
        return SYSTEM_HTML
    try:
        return fetch_html()
    except CorpusError as e:
        raise CorpusError(f"{PACKAGE} is not installed and could not be fetched ({e})") from None


def _doc_package(depends: str) -> str:
    # python3-doc is a pointer package; the HTML belongs to the python3.X-doc it depends on.
    deps = re.findall(r"python3\.\d+-doc", depends)
    return deps[0] if deps else PACKAGE


def _package_version(html: Path) -> tuple[str, str]:
    """(package, version) of the Debian package that holds the HTML files behind ``html``."""
    debs = cache_dir() / "corpus"
    if html.is_relative_to(debs):
        (meta,) = debs.glob(f"{PACKAGE}_*.deb")
        package = _doc_package(_run(["dpkg-deb", "-f", str(meta), "Depends"]))
        (deb,) = debs.glob(f"{package}_*.deb")
        return package, _run(["dpkg-deb", "-f", str(deb), "Version"])
    try:
        package = _doc_package(_run(["dpkg-query", "-W", "-f=${Depends}", PACKAGE]))
        return package, _run(["dpkg-query", "-W", "-f=${Version}", package])
    except CorpusError:
        return PACKAGE, "unknown"


def documents(split: str, html: Path) -> list[str]:
    if split not in _SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; use one of {', '.join(_SPLITS)}")
    docs: list[str] = []
    for d in _SPLITS[split]:
        docs += sorted(f"{d}/{p.name}" for p in (html / d).glob("*.html") if p.name != "index.html")
    return docs


def load_corpus(split: str = "eval") -> Corpus:
    """Paragraphs of the split's documents, joined with blank lines."""
    if split not in _SPLITS:
        raise ValueError(f"unknown corpus split {split!r}; use one of {', '.join(_SPLITS)}")
    html = locate_html()
    docs = documents(split, html)
    if not docs:
        raise CorpusError(f"no documents for split {split!r} under {html}")
    paras: list[str] = []
    for doc in docs:
        paras += paragraphs((html / doc).read_text(encoding="utf-8", errors="replace"))
    package, version = _package_version(html)
    return Corpus(text="\n\n".join(paras), package=package, version=version, documents=docs)
