"""Which lines of a runbook are commands, and what their words say."""

from __future__ import annotations

from opsbot.onboarding.markdown import commands, looks_like_markdown
from opsbot.onboarding.recognise import PROGRAMS, recognise
from opsbot.onboarding.shell import is_placeholder, simple_commands

RUNBOOK = """\
# Ops

```bash
# a comment, not a command
docker compose -f /srv/app/compose.yml \\
  logs --tail=50 bot
cat <<END > /tmp/x
rm -rf / inside a here-document is text
END
```

~~~console
$ systemctl restart app
● app.service - the app
$ journalctl -u app -n 20
~~~

- Check: `curl -f http://localhost:8080/health` then `pm2 logs web`
- Not a command: `config.yaml`

1. Dump it:

   ```sh
   pg_dump -Fc app > /var/backups/app.dump
   ```

Some text.

    kubectl -n prod rollout restart deployment/api

```yaml
command: docker restart ignored
```

```
Internet → nginx → app
docker logs proxy
```
"""


def test_every_kind_of_block_is_read_with_its_line() -> None:
    found = [(c.line, c.text) for c in commands(RUNBOOK, PROGRAMS)]
    assert found == [
        (5, "docker compose -f /srv/app/compose.yml logs --tail=50 bot"),
        (7, "cat <<END > /tmp/x"),
        (13, "systemctl restart app"),
        (15, "journalctl -u app -n 20"),
        (18, "curl -f http://localhost:8080/health"),
        (18, "pm2 logs web"),
        (24, "pg_dump -Fc app > /var/backups/app.dump"),
        (29, "kubectl -n prod rollout restart deployment/api"),
        (37, "docker logs proxy"),
    ]


def test_each_command_keeps_its_heading_and_the_comment_above_it() -> None:
    text = (
        "Staging\n=======\n\n```bash\n# after the deploy\n# on the DR site\ncurl -f x/health\n\n"
        "pm2 logs web\n```\n\n## Local development\n\n- Then: `pm2 restart web` once\n"
    )
    found = [(c.line, c.heading, c.comment) for c in commands(text, PROGRAMS)]
    assert found == [
        (7, "Staging", "after the deploy on the DR site"),  # a setext heading
        (9, "Staging", ""),  # a blank line ends a comment
        (14, "Local development", "Then: once"),  # an inline command: its item's words
    ]


def test_a_configuration_stanza_in_a_shell_block_is_not_commands() -> None:
    text = (
        "# Logs\n\n```bash\n# /etc/logrotate.d/app\n/var/log/app/*.log {\n    daily\n"
        "    postrotate\n        systemctl reload app\n    endscript\n}\n"
        "tail -n 5 /var/log/app/a.log\n```\n"
    )
    assert [(c.line, c.text) for c in commands(text, PROGRAMS)] == [
        (11, "tail -n 5 /var/log/app/a.log")
    ]


def test_defaults_are_taken_and_placeholders_known() -> None:
    assert simple_commands("curl http://localhost:${PORT:-8000}/health | jq .") == [
        ["curl", "http://localhost:8000/health"], ["jq", "."]
    ]  # fmt: skip
    for text in ("<prev>", "${VAR}", "$(date +%F)", "https://your-domain.com/x",
                 "/path/to/app", "quiz.example.com", "'[Your Name]'"):  # fmt: skip
        assert is_placeholder(simple_commands(f"echo {text}")[0][1]), text
    assert not is_placeholder("/srv/app/data.db")


def test_destructive_commands_are_never_targets() -> None:
    for line in ("docker compose down -v", "docker volume prune -f", "kubectl delete namespace x",
                 "psql -c 'DROP TABLE users'", "pm2 kill", "rm -rf /srv/app",
                 "curl https://api.telegram.org/bot$T/setWebhook",
                 "redis-cli FLUSHALL"):  # fmt: skip
        words = simple_commands(line)[0]
        assert [s.what for s in recognise(words)] == ["destructive"], line


def test_markdown_is_told_from_other_text() -> None:
    assert looks_like_markdown("# Title\n\ntext")
    assert looks_like_markdown("- item\n")
    assert not looks_like_markdown("2026-01-01 started\nERROR boom\n")
