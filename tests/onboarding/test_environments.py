"""A runbook that also serves staging, a DR site and a developer's machine drafts production
only: the other environments' URLs, database and deployment are comments of the target."""

from __future__ import annotations

from pathlib import Path

import yaml

from opsbot.config import load_config
from tests.onboarding.test_import_cli import RUNBOOKS, imported


def test_only_production_is_config_and_the_rest_is_commented(tmp_path: Path) -> None:
    done = imported(RUNBOOKS / "multi_env.md")
    draft = tmp_path / "opsbot.yaml"
    draft.write_text(done.stdout)
    bot = load_config(draft).targets["parcel-bot"]
    assert [getattr(c, "url", None) or getattr(c, "argv", None) for c in bot.checks] == [
        "https://parcels.acme-logistics.io/health",
        ["pg_isready", "-d", "parcels"],
    ]
    assert [b.database for b in bot.backups] == ["parcels"]  # type: ignore[union-attr]
    assert list(yaml.safe_load(done.stdout)["targets"]) == ["parcel-bot"]
    comments = [line.strip() for line in done.stdout.splitlines() if line.strip()[:1] == "#"]
    assert [c for c in comments if c.split(":")[0] in ("# staging", "# DR", "# local-dev")] == [
        # a host label says so, in a list item, a pg_dump's -h, a heading, a comment above
        "# staging: http check https://parcels-staging.acme-logistics.io/health (multi_env.md:15)",
        "# staging: postgres backup parcels (multi_env.md:22)",
        "# staging: http check http://10.0.5.20:8080/health (multi_env.md:28)",
        "# DR: http check http://10.9.0.4:8080/health (multi_env.md:36)",
        "# DR: http check https://dr.parcels.acme-logistics.io/health (multi_env.md:37)",
        "# local-dev: http check http://localhost:8080/health (multi_env.md:50)",
        "# staging: k8s deployment/parcel-bot -n parcels --context staging (multi_env.md:29)",
    ]
    # a heading that only mentions staging in passing is production: the reload is cited
    assert "# from multi_env.md:9, 14, 43" in comments
    # a service only run on a developer's machine is no target; the report says so
    assert (
        "  multi_env.md:49: compose service tracker (docker-compose.dev.yml)  "
        "(local-dev, not production: not drafted)"
    ) in done.stderr.splitlines()


def test_a_text_naming_production_too_says_nothing(tmp_path: Path) -> None:
    runbook = tmp_path / "both.md"
    runbook.write_text(
        "# Both\n\n## Staging and production\n\n```bash\nsystemctl restart web\n"
        "curl -f http://127.0.0.1:8080/health\n```\n\n## Checks\n\n```bash\n"
        "# the same on staging and on production\ncurl -f http://127.0.0.1:8080/ready\n```\n"
    )
    done = imported(runbook)
    checks = yaml.safe_load(done.stdout)["targets"]["web"]["checks"]
    assert [c["url"] for c in checks] == [
        "http://127.0.0.1:8080/health", "http://127.0.0.1:8080/ready"
    ]
