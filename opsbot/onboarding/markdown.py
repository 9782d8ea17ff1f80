"""The shell commands a Markdown runbook shows, each with the line it starts on.

Read: fenced blocks (``` and ~~~, any info string but a data language's, indented inside
lists), indented code blocks, and inline code in list items that starts with a known program.
Within a block: ``$ `` prompts (then lines without one are output), ``#`` comment lines,
``\\`` continuations, quotes left open across lines, here-documents and configuration stanzas
(``/var/log/app/*.log { … }``) skipped. Each command keeps the heading of its section and the
comment just above it (for an inline command, the list item's words): what they say about it
(``# in staging``) is not in its words.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

#: Info strings of blocks that hold data or code, not commands to run.
NOT_SHELL = frozenset(
    (
        "yaml", "yml", "json", "jsonc", "toml", "ini", "xml", "html", "css", "python", "py",
        "python3", "js", "javascript", "ts", "typescript", "go", "rust", "java", "kotlin",
        "csharp", "cs", "c", "cpp", "sql", "plpgsql", "nginx", "dockerfile", "diff", "mermaid",
        "text", "txt", "log", "env", "dotenv", "properties", "conf", "markdown", "md", "graphql",
        "proto", "hcl", "terraform"
    )
)

#: Info strings of shell blocks: every line of theirs is a command (or reported as unknown).
SHELL = frozenset(
    (
        "bash", "sh", "shell", "zsh", "console", "shell-session", "terminal", "ksh", "fish"
    )
)

_COMMAND_WORD = re.compile(r"^[\w./~$-][\w./+=@-]*$")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_LIST_ITEM = re.compile(r"^(?P<indent>\s*)(?:[-*+]|\d{1,3}[.)])\s+")
_INLINE = re.compile(r"`([^`\n]+)`")
_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<text>.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^\s{0,3}(?:=+|-+)\s*$")
_STANZA = re.compile(r"^/\S*\s*\{$")  # "/var/log/app/*.log {"
_PROMPT = re.compile(r"^(?:[\w.@~:/-]*\s?)?[$%]\s+")  # "$ cmd", "user@host:~$ cmd"


@dataclass(frozen=True, slots=True)
class Command:
    line: int  # 1-based, where the command starts
    text: str  # continuations joined into one line
    heading: str = ""  # the heading of the section it is in
    comment: str = ""  # the comment lines just above it, or its list item's other words


def commands(text: str, known: frozenset[str] = frozenset()) -> list[Command]:
    """Every command of the document in order; ``known`` names the programs inline code may run."""
    lines = text.splitlines()
    found: list[Command] = []
    i = 0
    list_indent: int | None = None  # content indent of the list we are in, if any
    blank_before = True
    heading = ""
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            end = _closing(lines, i, fence.group("fence"))
            info = fence.group("info").lower().strip("{}.")
            if info not in NOT_SHELL:
                block = _block(lines[i + 1 : end], i + 2, heading)
                if info not in SHELL:  # untagged: output, diagrams or prose as often as commands
                    block = [c for c in block if _program(c.text.split()[0]) in known]
                found += block
            i, blank_before = end + 1, False
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" \t"))
        item = _LIST_ITEM.match(line)
        if not stripped:
            blank_before = True
            i += 1
            continue
        title = _HEADING.match(line)
        if title or (
            not item and indent < 4 and i + 1 < len(lines) and _SETEXT.match(lines[i + 1])
        ):
            heading = title.group("text") if title else stripped
            list_indent, blank_before = None, True
            i += 1 if title else 2
            continue
        if item:
            list_indent = item.end()
        elif indent == 0:
            list_indent = None
        needed = 4 if list_indent is None else list_indent + 4
        if blank_before and indent >= needed and not item:
            start = i
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= needed):
                i += 1
            block = _block([ln[needed:] for ln in lines[start:i]], start + 1, heading)
            found += [c for c in block if _program(c.text.split()[0]) in known]
            blank_before = False
            continue
        if item:
            prose = " ".join(_INLINE.sub(" ", line[item.end() :]).split())
            for span in _INLINE.findall(line):
                words = span.split()
                if words and _program(words[0]) in known:
                    found.append(Command(i + 1, _without_prompt(span.strip()), heading, prose))
        blank_before = False
        i += 1
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _closing(lines: list[str], start: int, fence: str) -> int:
    """The index of the line closing the fence opened at ``start`` (or the end)."""
    for j in range(start + 1, len(lines)):
        stripped = lines[j].strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            return j
    return len(lines)


def _program(word: str) -> str:
    return word.removeprefix("$").strip().rsplit("/", 1)[-1]


def _without_prompt(line: str) -> str:
    return _PROMPT.sub("", line, count=1)


def _block(lines: list[str], first_line: int, heading: str = "") -> list[Command]:
    """The commands of one code block whose first line is ``first_line``."""
    prompted = any(_PROMPT.match(ln.strip()) for ln in lines)
    found: list[Command] = []
    comment: list[str] = []  # the comment lines since the last command or blank line
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        number = first_line + i
        i += 1
        if not raw:
            comment = []
            continue
        if raw.startswith("#"):
            comment.append(raw.lstrip("#").strip())
            continue
        if _STANZA.match(raw):  # a logrotate or nginx stanza shown in a shell block: not shell
            while i < len(lines) and lines[i].strip() != "}":
                i += 1
            i += 1
            continue
        if prompted:
            if not _PROMPT.match(raw):
                continue  # output shown after a prompt
            raw = _without_prompt(raw)
        text = raw
        while (text.endswith("\\") or _open_quote(text)) and i < len(lines):
            nxt = lines[i].strip()
            if prompted:
                nxt = _without_prompt(nxt)
            text = (text[:-1].rstrip() if text.endswith("\\") else text + "\n") + " " + nxt
            i += 1
        heredoc = _HEREDOC.search(text)
        if heredoc:
            word = heredoc.group(1)
            while i < len(lines) and lines[i].strip() != word:
                i += 1
            i += 1
        first = text.split()[0]
        if _COMMAND_WORD.match(first) and not first.endswith(":"):  # not output, not prose
            found.append(Command(number, text.strip(), heading, " ".join(comment)))
        comment = []
    return found


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def looks_like_markdown(text: str) -> bool:
    """Headings, lists or code fences: a runbook, not a log, a script or a binary dump."""
    return bool(
        re.search(r"^\s{0,3}(#{1,6}\s|[-*+]\s|\d{1,3}[.)]\s|```|~~~)", text, re.MULTILINE)
    )
