import re

import pytest

from oscar_gguf import corpus


@pytest.fixture(scope="module")
def ev():
    return corpus.load_corpus("eval")


@pytest.fixture(scope="module")
def cal():
    return corpus.load_corpus("calib")


def test_splits_disjoint(ev, cal):
    assert ev.documents and cal.documents
    assert not set(ev.documents) & set(cal.documents)
    assert ev.documents == corpus.load_corpus("eval").documents  # deterministic


def test_eval_is_enough_prose(ev):
    t = ev.text
    assert len(t) >= 400_000
    assert "<p" not in t and "</" not in t
    letters = sum(c.isalpha() or c == " " for c in t)
    assert letters / len(t) > 0.85
    paras = t.split("\n\n")
    assert min(len(p) for p in paras) >= corpus.MIN_PARAGRAPH


def test_version_recorded(ev, cal):
    assert ev.package.startswith("python3") and ev.package.endswith("-doc")
    assert ev.version and ev.version != "unknown"
    assert (cal.package, cal.version) == (ev.package, ev.version)


def test_bad_split():
    with pytest.raises(ValueError):
        corpus.load_corpus("train")
    with pytest.raises(ValueError, match="debian-handbook has no split 'calib'"):
        corpus.load_corpus("calib", "debian-handbook")  # held out: no calibration reads it
    with pytest.raises(ValueError, match="unknown text 'novels'"):
        corpus.load_corpus("eval", "novels")


def test_handbook_is_another_kind_of_prose(ev):
    hb = corpus.load_corpus("eval", "debian-handbook")
    assert (hb.package, hb.name) == ("debian-handbook", "debian-handbook") and hb.version not in ("", "unknown")
    assert len(hb.documents) > 100 and "index.html" not in hb.documents
    t = hb.text
    assert len(t) >= 600_000
    assert not re.search(r"</?(div|p|pre|span|a|code)\b", t)  # prose quotes shell redirections like </dev/null
    assert sum(c.isalpha() or c == " " for c in t) / len(t) > 0.85
    assert min(len(p) for p in t.split("\n\n")) >= corpus.MIN_PARAGRAPH
    assert not set(t.split("\n\n")) & set(ev.text.split("\n\n"))  # no paragraph shared with Python's docs


def test_publican_parser_keeps_paragraphs_not_code():
    prose = "The administrator edits the configuration file and restarts the service to apply the new settings, "
    html = (
        '<div id="banner"><p>' + "navigation " * 20 + "</p></div>"
        '<div class="section"><div class="para">' + prose + "with <code class=\"command\">apt</code> here."
        '<div class="informalexample"><pre class="screen">' + "$ apt-get install x\n" * 10 + "</pre></div>"
        "</div><div class=\"para\">Too short.</div></div>"
    )
    assert corpus.paragraphs(html, "publican") == [prose + "with apt here."]


def test_paragraph_parser_keeps_only_body_prose():
    prose = "This sentence is long enough to count as real prose in the body of the page, with <code>"
    html = (
        '<div class="sphinxsidebar"><p>' + "navigation " * 20 + "</p></div>"
        '<div class="body" role="main"><div class="section">'
        "<p>" + prose.replace("<code>", "<code>inline</code> code.") + "</p>"
        '<div class="highlight"><pre>' + "x = 1\n" * 30 + "</pre></div>"
        "<p>Too short.</p></div></div>"
        '<div class="footer"><p>' + "copyright " * 20 + "</p></div>"
    )
    assert corpus.paragraphs(html) == [prose.replace("<code>", "inline code.")]
