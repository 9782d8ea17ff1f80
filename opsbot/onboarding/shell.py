"""A runbook's command line as words: simple commands, defaults taken, placeholders known.

Nothing here runs anything: the words only feed the recognisers. ``${PORT:-8000}`` becomes its
default; ``$(date …)``, ``${VAR}``, ``<prev>``, ``your-domain.com`` and ``/path/to/`` stay
recognisable as placeholders (``is_placeholder``) so no drafted value is one.
"""

from __future__ import annotations

import re
import shlex

_DEFAULT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}$]*)\}")
_SUBST = re.compile(r"\$\((?:[^()]|\([^()]*\))*\)|`[^`]*`")
SUBST = "$(...)"  # what a command substitution becomes: a placeholder

_PLACEHOLDER = re.compile(
    r"<[^<>\s]*>|<[^<>]{1,40}>|‹[^›]*›|\$\{?[A-Za-z_]|\$\(|\[[A-Za-z _-]+\]"
    r"|your[-_]?(?:domain|server|host|app|bot|project|user|token|api|name|db|database)"
    r"|(?:^|[/.@])example\.(?:com|org|net)|/path/to/|\bchangeme\b|\bxxx+\b|\.\.\.|^\*+$",
    re.IGNORECASE,
)

_SEPARATORS = {"&&", "||", ";", "|", "&", "|&", ";;"}
_REDIRECTS = {">", ">>", "<", "2>", "2>&1", "&>", ">&", "<<", "<<<", "<<-"}
_WRAPPERS = {"sudo", "time", "nohup", "exec", "command", "nice", "watch", "timeout"}


def is_placeholder(text: str) -> bool:
    """A value the runbook means to be replaced: never written into a draft as-is."""
    return bool(_PLACEHOLDER.search(text))


_ANGLED = re.compile(r"<([A-Za-z][\w.:/ -]{0,40})>")


def prepare(line: str) -> str:
    """Defaults taken (``${PORT:-8000}`` → ``8000``), substitutions made placeholders, and
    ``<TOKEN>`` made ``‹TOKEN›`` so the shell lexer does not read it as a redirection."""
    line = _ANGLED.sub(lambda m: f"‹{m.group(1)}›", line)
    return _SUBST.sub(SUBST, _DEFAULT.sub(lambda m: m.group(1), line))


def simple_commands(line: str) -> list[list[str]]:
    """The simple commands of one line (split at ``&&``, ``;``, ``|``), wrappers and ``VAR=``
    assignments dropped, redirections cut off; ``[]`` when it is not shell at all."""
    try:
        lexer = shlex.shlex(prepare(line), posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return []
    out: list[list[str]] = []
    current: list[str] = []
    skip_redirect_target = False
    for token in tokens:
        if token in _SEPARATORS:
            if current:
                out.append(current)
            current, skip_redirect_target = [], False
            continue
        if skip_redirect_target:
            skip_redirect_target = False
            continue
        if token in _REDIRECTS or re.fullmatch(r"[<>]+&?", token):
            if current and current[-1].isdigit():  # 2>, 1>> : the descriptor
                current.pop()
            skip_redirect_target = True
            continue
        current.append(token)
    if current:
        out.append(current)
    return [words for words in map(_unwrap, out) if words]


def _unwrap(words: list[str]) -> list[str]:
    """Drop ``sudo -u x``, ``VAR=value`` prefixes, ``watch -n 5`` and the like."""
    i = 0
    while i < len(words):
        word = words[i]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            i += 1
        elif word in _WRAPPERS or word == "env":
            i += 1
            while i < len(words) and words[i].startswith("-"):
                takes_value = words[i] in ("-u", "-n", "-g", "--user", "-s")
                i += 2 if takes_value else 1
            if word == "timeout" and i < len(words) and re.fullmatch(r"[\d.]+[smhd]?", words[i]):
                i += 1
        else:
            break
    rest = words[i:]
    if len(rest) == 1 and " " in rest[0]:  # watch 'docker stats bot': the quoted command
        return _unwrap(shlex.split(rest[0])) if not _unsplittable(rest[0]) else rest
    return rest


def _unsplittable(text: str) -> bool:
    try:
        shlex.split(text)
    except ValueError:
        return True
    return False


def options(words: list[str], with_value: set[str]) -> tuple[dict[str, str], list[str]]:
    """Options (``-f x``, ``--file=x``, ``-fx`` for single letters) and the other words."""
    found: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and "=" in word:
            key, _, value = word.partition("=")
            found[key] = value
        elif word in with_value and i + 1 < len(words):
            found[word] = words[i + 1]
            i += 1
        elif len(word) > 2 and word[0] == "-" and word[1] != "-" and word[:2] in with_value:
            found[word[:2]] = word[2:]
        elif word.startswith("-"):
            found[word] = ""
        else:
            rest.append(word)
        i += 1
    return found, rest
