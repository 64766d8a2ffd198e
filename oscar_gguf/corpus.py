"""Real English prose for calibration and evaluation, from Debian packages.

Two kinds of prose: Python's documentation (python3-doc: tutorial, reference, FAQ, how-tos) and a book on running
a system (debian-handbook, The Debian Administrator's Handbook). Calibration reads python3-doc's how-tos only;
evaluation reads python3-doc's other documents, or the handbook, which no calibration has seen. Every split is a
fixed, sorted document list, so a result can name exactly the text it was measured on (package, version,
documents).
"""
from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from .models import cache_dir

MIN_PARAGRAPH = 80  # shorter paragraphs are captions, labels and link lists, not prose


class CorpusError(RuntimeError):
    """The documentation could not be found or fetched; the message is one line."""


@dataclass(frozen=True)
class Source:
    package: str  # what apt-get downloads
    html: str  # the HTML root inside the installed package, from /
    splits: dict[str, tuple[str, ...]]  # split -> globs of documents under the html root
    markup: str  # "sphinx" (<p> inside the main body div) or "publican" (<div class="para">)
    holder: str | None = None  # a pointer package's dependency that holds the files (regex on its Depends)


TEXTS = {
    "python3-doc": Source("python3-doc", "usr/share/doc/python3-doc/html",
                          {"eval": ("tutorial/*.html", "faq/*.html", "reference/*.html"), "calib": ("howto/*.html",)},
                          "sphinx", holder=r"python3\.\d+-doc"),
    "debian-handbook": Source("debian-handbook", "usr/share/doc/debian-handbook/html/en-US", {"eval": ("*.html",)},
                              "publican"),
}
DEFAULT_TEXT = "python3-doc"


@dataclass
class Corpus:
    text: str
    package: str  # the Debian package that holds the HTML (python3-doc points at python3.X-doc)
    version: str
    documents: list[str]  # paths relative to the html root, sorted
    name: str = DEFAULT_TEXT  # the TEXTS entry


class _ParagraphParser(HTMLParser):
    """Text of the paragraphs of one page: Sphinx's <p> inside <div class="body" role="main">, or Publican's
    <div class="para"> (code blocks inside one are left out)."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.markup = markup
        self.paragraphs: list[str] = []
        self._divs: list[str] = []  # per open div: "body", "para" or ""
        self._buf: list[str] | None = None
        self._pre = 0

    def _in_body(self) -> bool:
        return self.markup == "publican" or "body" in self._divs

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "div":
            role = ""
            if self.markup == "sphinx" and a.get("role") == "main" and "body" in classes:
                role = "body"
            elif self.markup == "publican" and "para" in classes and self._buf is None:
                role, self._buf = "para", []
            self._divs.append(role)
        elif tag == "p" and self.markup == "sphinx" and self._in_body():
            self._buf = []
        elif tag == "pre":
            self._pre += 1

    def _end_paragraph(self) -> None:
        text = " ".join("".join(self._buf or []).split())
        self._buf = None
        if len(text) >= MIN_PARAGRAPH:
            self.paragraphs.append(text)

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._divs:
            if self._divs.pop() == "para":
                self._end_paragraph()
        elif tag == "p" and self.markup == "sphinx" and self._buf is not None:
            self._end_paragraph()
        elif tag == "pre":
            self._pre = max(self._pre - 1, 0)

    def handle_data(self, data: str) -> None:
        if self._buf is not None and not self._pre:
            self._buf.append(data)


def paragraphs(html: str, markup: str = "sphinx") -> list[str]:
    p = _ParagraphParser(markup)
    p.feed(html)
    p.close()
    return p.paragraphs


def source(name: str) -> Source:
    if name not in TEXTS:
        raise ValueError(f"unknown text {name!r}; use one of {', '.join(TEXTS)}")
    return TEXTS[name]


def _run(cmd: list[str], cwd: Path | None = None, package: str = "") -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CorpusError(f"{cmd[0]} not found; install {package} (apt-get install {package})") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CorpusError(f"{' '.join(cmd[:3])} failed: {last}")
    return proc.stdout.strip()


def _holder(src: Source, depends: str) -> str:
    # python3-doc is a pointer package; the HTML belongs to the python3.X-doc it depends on.
    deps = re.findall(src.holder, depends) if src.holder else []
    return deps[0] if deps else src.package


def _debs(src: Source, root: Path) -> list[Path]:
    """The source's .debs in the cache (the package and the one holding its files), the package's own last."""
    own = sorted(root.glob(f"{src.package}_*.deb"))
    if not own:
        return []
    holder = _holder(src, _run(["dpkg-deb", "-f", str(own[0]), "Depends"], package=src.package))
    held = sorted(root.glob(f"{holder}_*.deb")) if holder != src.package else []
    return held + own


def cached_debs(name: str = DEFAULT_TEXT) -> list[Path]:
    """The text's .debs in the cache (empty when none were fetched)."""
    root = cache_dir() / "corpus"
    return _debs(source(name), root) if root.is_dir() else []


def fetch_html(name: str = DEFAULT_TEXT) -> Path:
    """The text's HTML from the cache, unpacked from the .debs there (downloaded first if there are none, or
    carried in from another machine: scripts/gpu_bundle.py); returns the html root."""
    src = source(name)
    root = cache_dir() / "corpus"
    tree = root / src.package
    html = tree / src.html
    if html.is_dir():
        return html
    root.mkdir(parents=True, exist_ok=True)
    if not _debs(src, root):
        _download_debs(src, root)
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=root) as tmp:
        x = Path(tmp) / "x"
        for deb in _debs(src, root):
            _run(["dpkg-deb", "-x", str(deb), str(x)], package=src.package)
        os.replace(x, tree)  # extraction finished: publish in one step
    if not html.is_dir():
        raise CorpusError(f"{src.package} was fetched but has no HTML under {html}")
    return html


def _download_debs(src: Source, root: Path) -> None:
    """The package and the package it points at, into root (kept: they record the versions)."""
    with tempfile.TemporaryDirectory(prefix=".deb-", dir=root) as tmp:
        t = Path(tmp)
        _run(["apt-get", "download", src.package], cwd=t, package=src.package)
        (meta,) = t.glob(f"{src.package}_*.deb")
        holder = _holder(src, _run(["dpkg-deb", "-f", str(meta), "Depends"], package=src.package))
        if holder != src.package:
            _run(["apt-get", "download", holder], cwd=t, package=src.package)
        for deb in sorted(t.glob("*.deb"), key=lambda d: d == meta):  # the package itself, the marker, last
            os.replace(deb, root / deb.name)


def locate_html(name: str = DEFAULT_TEXT) -> Path:
    """The text's HTML root: the installed one, else a copy fetched with apt-get."""
    src = source(name)
    system = Path("/") / src.html
    if system.is_dir():
        return system
    try:
        return fetch_html(name)
    except CorpusError as e:
        raise CorpusError(f"{src.package} is not installed and could not be fetched ({e})") from None


def _package_version(src: Source, html: Path) -> tuple[str, str]:
    """(package, version) of the Debian package that holds the HTML files behind ``html``."""
    debs = cache_dir() / "corpus"
    if html.is_relative_to(debs):
        d = _debs(src, debs)
        return _run(["dpkg-deb", "-f", str(d[0]), "Package"]), _run(["dpkg-deb", "-f", str(d[0]), "Version"])
    try:
        package = _holder(src, _run(["dpkg-query", "-W", "-f=${Depends}", src.package]))
        return package, _run(["dpkg-query", "-W", "-f=${Version}", package])
    except CorpusError:
        return src.package, "unknown"


def _globs(name: str, split: str) -> tuple[str, ...]:
    src = source(name)
    if split not in src.splits:
        raise ValueError(f"{name} has no split {split!r}; it has {', '.join(src.splits)}")
    return src.splits[split]


def documents(split: str, html: Path, name: str = DEFAULT_TEXT) -> list[str]:
    docs: list[str] = []
    for pattern in _globs(name, split):
        d, _, files = pattern.rpartition("/")
        found = sorted(p.name for p in (html / d).glob("*.html") if fnmatch.fnmatch(p.name, files))
        docs += [f"{d}/{f}" if d else f for f in found if f != "index.html"]  # index pages are tables of contents
    return docs


def load_corpus(split: str = "eval", text: str = DEFAULT_TEXT) -> Corpus:
    """Paragraphs of the split's documents of a text (TEXTS), joined with blank lines."""
    src = source(text)
    _globs(text, split)  # a bad split is refused before anything is fetched
    html = locate_html(text)
    docs = documents(split, html, text)
    if not docs:
        raise CorpusError(f"no documents for split {split!r} under {html}")
    paras: list[str] = []
    for doc in docs:
        paras += paragraphs((html / doc).read_text(encoding="utf-8", errors="replace"), src.markup)
    package, version = _package_version(src, html)
    return Corpus(text="\n\n".join(paras), package=package, version=version, documents=docs, name=text)
