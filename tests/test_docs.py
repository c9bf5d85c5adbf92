"""Markdown files point only at files in the repository, and at headings that exist.

A reader has the repository and nothing else, so a relative link must name a file (or
folder) of the repository and an anchor a heading of that file. Links to other sites are
allowed only to the upstream documentation of the tools an operator runs (the hosts in
EXTERNAL_DOCUMENTATION): those are clearly external, stable, and not this project's to
ship. Anything else (a blog, a CI page, a path like `../shared/...` that only exists on
a developer's machine) fails.
"""

from __future__ import annotations

import re
import subprocess
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL_DOCUMENTATION = {
    "redis.io",
    "valkey.io",
    "prometheus.io",
    "grafana.com",
    "kubernetes.io",
    "helm.sh",
    "graphql.org",
    "spec.graphql.org",
}
PARSER = MarkdownIt("commonmark").enable("table")


def repository_files() -> set[Path]:
    """Tracked files, and new ones not ignored (so a docs file is checked before its commit)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return {ROOT / name for name in listed.split("\0") if name and (ROOT / name).exists()}


def tokens(text: str) -> list[Token]:
    """Every token of the document, inline ones (links, code spans) included."""
    flat = []
    for token in PARSER.parse(text):
        flat.append(token)
        flat.extend(token.children or [])
    return flat


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    parsed = PARSER.parse(text)
    for opening, inline in pairwise(parsed):
        if opening.type == "heading_open":
            words = "".join(child.content for child in inline.children or [])
            anchor = slug(words)
            number = 0
            while (anchor if number == 0 else f"{anchor}-{number}") in found:
                number += 1  # GitHub numbers repeated headings: x, x-1, x-2
            found.add(anchor if number == 0 else f"{anchor}-{number}")
    return found


def problems(path: Path, text: str, files: set[Path]) -> list[str]:
    """What is wrong with the links of one Markdown file (empty when nothing is)."""
    folders = {folder for file in files for folder in file.parents}
    found = []
    for token in tokens(text):
        if token.type == "inline":
            continue  # a paragraph's text: its children (text, code, links) are checked
        if "/work/shared" in token.content or "../shared/" in token.content:
            found.append(f"points at the developers' shared folder: {token.content!r}")
        relative_code = token.type == "code_inline" and token.content.startswith("../")
        if relative_code and not (path.parent / token.content).resolve().is_relative_to(ROOT):
            found.append(f"names a path outside the repository: {token.content}")
        target = token.attrs.get("href") or token.attrs.get("src")
        if not isinstance(target, str):
            continue
        url = urlsplit(target)
        if url.scheme:
            if url.scheme not in {"http", "https"} or url.hostname not in EXTERNAL_DOCUMENTATION:
                found.append(f"links outside the repository: {target}")
            continue
        destination = (path.parent / unquote(url.path)).resolve() if url.path else path
        if not destination.is_relative_to(ROOT):
            found.append(f"links outside the repository: {target}")
        elif destination not in files and destination not in folders:
            found.append(f"links to a file the repository does not have: {target}")
        elif url.fragment and destination.suffix == ".md":
            heading_text = text if destination == path else destination.read_text()
            if url.fragment not in anchors(heading_text):
                found.append(f"links to a heading that does not exist: {target}")
    return found


def test_markdown_files_link_only_to_what_the_repository_has() -> None:
    files = repository_files()
    markdown = sorted(file for file in files if file.suffix == ".md")

    assert ROOT / "docs" / "operations.md" in markdown
    report = {
        str(file.relative_to(ROOT)): found
        for file in markdown
        if (found := problems(file, file.read_text(), files))
    }
    assert report == {}


def test_link_check_finds_each_kind_of_bad_link() -> None:
    files = repository_files()
    page = ROOT / "docs" / "example.md"
    text = "\n".join(
        [
            "# A heading",
            "[fine](operations.md#redis-requirements) [fine too](#a-heading)",
            "[folder](../helm/event-broker) [docs site](https://prometheus.io/docs/)",
            "[missing](nowhere.md) [outside](../../etc/passwd) [gone](#no-such-heading)",
            "[blog](https://example.com/post) [other anchor](operations.md#nope)",
            "see `../shared/reference/clients.md` and `../../elsewhere.txt`",
        ]
    )

    found = problems(page, text, files | {page})

    assert found == [
        "links to a file the repository does not have: nowhere.md",
        "links outside the repository: ../../etc/passwd",
        "links to a heading that does not exist: #no-such-heading",
        "links outside the repository: https://example.com/post",
        "links to a heading that does not exist: operations.md#nope",
        "points at the developers' shared folder: '../shared/reference/clients.md'",
        "names a path outside the repository: ../../elsewhere.txt",
    ]
