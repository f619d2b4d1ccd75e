"""The docs: /docs works offline, and the Markdown pages hold together.

Swagger UI's files come from this server (drf-spectacular-sidecar), pinned by the package
version, never from a CDN. The README stays a short front page; every relative link of
the README, docs/ and bench/README.md (and every `docs/...md#anchor` a code comment points
to) leads to a file and heading that exist; the close codes are tabled once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_DIRS = ["accounts", "console", "core", "realtime", "sessions_runtime", "symphainy", "tests", "deploy", "bench"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


@pytest.mark.django_db
def test_the_docs_page_loads_its_scripts_and_styles_from_this_server():
    client = Client()
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'<script[^>]+src="([^"]+)"', html) + re.findall(r'<link[^>]+href="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/"), f"{asset} is not served by this server"
        response = client.get(asset)
        assert response.status_code == 200, asset
        b"".join(response.streaming_content) if response.streaming else response.content


def _prose(text: str) -> str:
    """The page without its code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces to '-',
    repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _broken(source: Path, target: str) -> str | None:
    """Why the relative link `target` of `source` leads nowhere, or None."""
    path, _, anchor = target.partition("#")
    page = (source.parent / path).resolve() if path else source
    if not page.exists():
        return f"{source.relative_to(ROOT)}: {target} (no such file)"
    if anchor and page.suffix == ".md" and anchor not in _anchors(page):
        return f"{source.relative_to(ROOT)}: {target} (no heading #{anchor})"
    return None


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 220, f"README.md has {len(lines)} lines; the rest belongs in docs/"


def test_every_relative_link_of_the_docs_leads_to_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto: ...
                continue
            if problem := _broken(page, target):
                broken.append(problem)
    assert not broken, broken


def test_every_docs_page_is_in_the_readme_map():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in PAGES[2:] if f"(docs/{p.name})" not in readme]
    assert not missing, f"pages the README's map of the docs does not list: {missing}"


def test_the_docs_a_code_comment_points_to_exist():
    broken = []
    for folder in CODE_DIRS:
        for module in (ROOT / folder).rglob("*.py"):
            for target in re.findall(r"\bdocs/[\w-]+\.md(?:#[\w-]+)?", module.read_text()):
                # Read from the repository's root, as the README's own links are.
                if problem := _broken(ROOT / "README.md", target):
                    broken.append(f"{module.relative_to(ROOT)}: {problem.split(': ', 1)[1]}")
    assert not broken, broken


def test_the_close_codes_are_tabled_once():
    """One table of close codes (docs/protocol.md); every other page links to it."""
    tables = [p.relative_to(ROOT).as_posix() for p in PAGES if re.search(r"^\|\s*4409\s*\|", p.read_text(), re.M)]
    assert tables == ["docs/protocol.md"], tables
