"""mjml-python, through our renderer's compile path, against the official MJML 4 output.

The cases are mjml-python's test data (`../shared/testdata/mjml/mjml_python_testdata`): each
`X.mjml` has `X-expected.html` made by upstream MJML 4. Outputs are compared as parsed HTML
(element tree, attributes, inline style declarations, CSS and conditional comments with
whitespace normalised), never as bytes: the expected files are beautified. A few known MRML
differences are normalised on both sides (see below) so the rest of those cases is compared;
compiling is tested on its own, so a source that does not compile cannot pass as a difference.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from render_helpers import MJML_TESTDATA

from digest.errors import TemplateError
from digest.render import compile_mjml

# Sources that do not compile through our path at all, with why. Anything else that fails to
# compile fails test_every_source_compiles; these two must keep failing (else drop them here).
COMPILE_FAILURES: dict[str, str] = {
    "mj-html-attributes": 'MRML does not support mj-html-attributes ("unexpected element")',
    "mj-include-body": "our compile path has no mj-include loader: templates compose with Jinja2 instead",
}

# Cases that compile but where mjml-python (a binding of the Rust MRML) differs from MJML 4 in
# more than the normalised differences below, with what differs. Each is a strict xfail that
# must fail on the comparison itself (AssertionError), so a fixed upstream shows up as XPASS
# and a crash does not pass for a known difference. Our template uses none of these components
# but mj-wrapper (unpadded, no divider).
KNOWN_DIFFERENCES: dict[str, str] = {
    "css-inlining": 'MRML does not inline <mj-style inline="inline"> into elements',
    "custom-component": "custom components are an mjml-python (pure Python) feature; MRML has none",
    "mj-accordion": "MRML's default accordion icons differ (other image URLs and a 32px size)",
    "mj-attributes-for-mj-body": "MRML does not apply <mj-attributes> defaults to mj-body",
    "mj-carousel": "MRML writes the carousel's media query as '@media screen,yahoo' (MJML 4: 'screen yahoo')",
    "mj-column-with-fractional-width": "MRML keeps more decimals in Outlook widths (199.98003px)",
    "mj-head-with-comment": "MRML drops comments inside mj-head",
    "mj-hero-fluid": "MRML computes a negative height for a fluid mj-hero",
    "mj-wrapper": "MRML sizes an mj-divider's Outlook table in a padded mj-wrapper differently (494/454px)",
}

# Known MRML differences, normalised on both sides so the rest of each case is still compared:
# - MRML leaves out alt="" on an mj-image given no alt (MJML 4 writes it): an img with no alt
#   counts as alt="" (our own images always have alt text; tests/test_render.py checks it);
# - MRML adds a (non-HTML) vertical-align attribute to the mj-button cell: dropped on td;
# - MJML 4 puts whitespace around &nbsp; inside Outlook conditional comments, MRML none;
# - element ids of mj-navbar and mj-carousel: MRML uses a fixed 00000000 where MJML 4 writes a
#   random 16-hex-digit id (the fixtures hold one run's): both become "ID".
_ID_RE = re.compile(r"(?<![0-9a-f])(?:[0-9a-f]{16}|0{8})(?![0-9a-f])")


def _norm_ids(text: str) -> str:
    return _ID_RE.sub("ID", text)


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def _norm_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _norm_css(css: str) -> str:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"\s+", " ", css)
    css = re.sub(r"\s*!\s*important", "!important", css)
    css = re.sub(r"\s*([{};:,>~+])\s*", r"\1", css)
    return css.replace(";}", "}").strip()


def _norm_style(value: str) -> tuple[tuple[str, str], ...]:
    decls = []
    for decl in value.split(";"):
        if ":" in decl:
            prop, _, val = decl.partition(":")
            decls.append((prop.strip().lower(), _norm_ws(val)))
    return tuple(sorted(decls))


_TAG_RE = re.compile(r"<([a-zA-Z][\w:-]*)((?:\s+[\w:-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*/?>")
_ATTR_RE = re.compile(r"([\w:-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+)))?")


def _norm_tag(m: re.Match[str]) -> str:
    attrs = []
    for a in _ATTR_RE.finditer(m.group(2)):
        name, value = a.group(1), a.group(2) or a.group(3) or a.group(4) or ""
        if name == "style":
            value = ";".join(f"{k}:{v}" for k, v in _norm_style(value))
        if name in ("style", "class") and not value.strip():
            continue
        attrs.append(f'{name}="{_norm_ws(value)}"')
    return f"<{m.group(1)}{''.join(' ' + a for a in sorted(attrs))}>"


def _norm_comment(data: str) -> str:
    """Conditional comments hold Outlook markup: tags with sorted attributes, no layout spaces."""
    data = re.sub(r"\s*&nbsp;\s*", "&nbsp;", _norm_ids(data))
    return _TAG_RE.sub(_norm_tag, re.sub(r">\s+<", "><", _norm_ws(data)))


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list = ["#root", (), []]
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        norm = []
        if tag == "img" and not any(name == "alt" for name, _ in attrs):
            attrs = [*attrs, ("alt", "")]
        for name, value in attrs:
            value = _norm_ids(value or "")
            if name in ("style", "class") and not value.strip():
                continue  # style="" is no style
            if tag == "td" and name == "vertical-align":
                continue
            if name == "style":
                norm.append((name, _norm_style(value)))
            elif name == "class":
                norm.append((name, tuple(sorted(value.split()))))
            else:
                norm.append((name, _norm_ws(value)))
        node = [tag, tuple(sorted(norm)), []]
        self.stack[-1][2].append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        parent = self.stack[-1]
        text = _norm_ids(_norm_css(data) if parent[0] == "style" else _norm_ws(data))
        if text:
            parent[2].append(("#text", text))

    def handle_comment(self, data: str) -> None:
        text = _norm_comment(data)
        if text:
            self.stack[-1][2].append(("#comment", text))


def parse(html: str) -> list:
    tree = _Tree()
    tree.feed(html)
    tree.close()
    return _merge_text(tree.root)


_MSO_START = "[if mso | IE]>"
_MSO_END = "<![endif]"


def _merge_text(node: list) -> list:
    """Adjacent text pieces as one (beautifying splits text around inline tags differently)."""
    if node[0] in ("#text", "#comment"):
        return node
    children: list = []
    for child in node[2]:
        child = _merge_text(child) if isinstance(child, list) else child
        if children and child[0] == "#text" and children[-1][0] == "#text":
            children[-1] = ("#text", _norm_ws(children[-1][1] + " " + child[1]))
        elif (
            children
            and child[0] == "#comment"
            and children[-1][0] == "#comment"
            and (children[-1][1].endswith(_MSO_END) and child[1].startswith(_MSO_START))
        ):
            # MJML 4 merges back-to-back Outlook conditionals into one; MRML leaves them apart.
            merged = children[-1][1][: -len(_MSO_END)] + child[1][len(_MSO_START) :]
            children[-1] = ("#comment", merged)
        else:
            children.append(child)
    return [node[0], node[1], children]


def first_difference(a: object, b: object, path: str = "") -> str | None:
    """Where two parsed trees first differ, as a readable path, or None."""
    if isinstance(a, list) and isinstance(b, list):
        if a[0] != b[0]:
            return f"{path}: <{a[0]}> vs <{b[0]}>"
        here = f"{path}/{a[0]}"
        if a[1] != b[1]:
            return f"{here}: attributes {dict(a[1])} vs {dict(b[1])}"
        for i, (x, y) in enumerate(zip(a[2], b[2], strict=False)):
            diff = first_difference(x, y, f"{here}[{i}]")
            if diff:
                return diff
        if len(a[2]) != len(b[2]):
            return f"{here}: {len(a[2])} children vs {len(b[2])}"
        return None
    if a != b:
        return f"{path}: {str(a)[:300]!r} vs {str(b)[:300]!r}"
    return None


def _sources(*, with_expected: bool) -> list:
    if not MJML_TESTDATA.is_dir():
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"MJML test data not found at {MJML_TESTDATA}"))
        ]
    cases = []
    for source in sorted(MJML_TESTDATA.glob("*.mjml")):
        if not source.with_name(source.stem + "-expected.html").exists():
            continue  # partials for mj-include (_header.mjml, _footer.mjml): not documents
        marks = []
        if with_expected and source.stem in COMPILE_FAILURES:
            reason = f"does not compile: {COMPILE_FAILURES[source.stem]}"
            marks.append(pytest.mark.xfail(raises=TemplateError, strict=True, reason=reason))
        elif with_expected and source.stem in KNOWN_DIFFERENCES:
            reason = KNOWN_DIFFERENCES[source.stem]
            marks.append(pytest.mark.xfail(raises=AssertionError, strict=True, reason=reason))
        cases.append(pytest.param(source, marks=marks, id=source.stem))
    return cases


@pytest.mark.parametrize("source", _sources(with_expected=False))
def test_every_source_compiles(source: Path) -> None:
    """Compiling is checked apart from matching, so a compile failure never hides as a known difference."""
    text = source.read_text(encoding="utf-8")
    if source.stem in COMPILE_FAILURES:
        with pytest.raises(TemplateError, match="MJML did not compile"):
            compile_mjml(text, name=source.name, remote_fonts=True)
    else:
        assert "<html" in compile_mjml(text, name=source.name, remote_fonts=True)


def test_allowlists_name_real_cases() -> None:
    if not MJML_TESTDATA.is_dir():
        pytest.skip(f"MJML test data not found at {MJML_TESTDATA}")
    names = {p.stem for p in MJML_TESTDATA.glob("*.mjml")}
    assert set(COMPILE_FAILURES) | set(KNOWN_DIFFERENCES) <= names
    assert not set(COMPILE_FAILURES) & set(KNOWN_DIFFERENCES)


@pytest.mark.parametrize("source", _sources(with_expected=True))
def test_mjml_matches_official_output(source: Path) -> None:
    html = compile_mjml(source.read_text(encoding="utf-8"), name=source.name, remote_fonts=True)
    expected = source.with_name(source.stem + "-expected.html").read_text(encoding="utf-8")
    diff = first_difference(parse(html), parse(expected))
    assert diff is None, f"{source.name}: {diff}"


def test_comparison_notices_a_changed_attribute() -> None:
    a = parse('<table role="presentation" style="width:100%; color: red"><tr><td>x</td></tr></table>')
    b = parse('<table style="color:red;width:100%"  role="presentation">\n<tr><td> x </td></tr></table>')
    c = parse('<table style="color:red;width:100%"><tr><td>x</td></tr></table>')
    assert first_difference(a, b) is None
    assert "attributes" in (first_difference(a, c) or "")


def test_normalisation_covers_only_the_known_differences() -> None:
    """alt="", the button cell's vertical-align and the ids are normalised; nothing else is."""
    no_alt = parse('<img src="a.png" width="10"><td vertical-align="middle">x</td><b id="00000000"></b>')
    with_alt = parse('<img alt="" src="a.png" width="10"><td>x</td><b id="a043bae1603803a8"></b>')
    assert first_difference(no_alt, with_alt) is None
    assert first_difference(parse('<img alt="A" src="a.png">'), parse('<img alt="" src="a.png">'))
    assert first_difference(parse('<div vertical-align="top">x</div>'), parse("<div>x</div>"))
    assert first_difference(parse('<b id="x1"></b>'), parse('<b id="x2"></b>'))
    nbsp_a = parse("<p><!--[if mso | IE]><td> &nbsp; </td><![endif]--></p>")
    nbsp_b = parse("<p><!--[if mso | IE]><td>&nbsp;</td><![endif]--></p>")
    assert first_difference(nbsp_a, nbsp_b) is None
