"""Buttons laid out for a thumb on a 360 px phone: at most three a row, long labels fewer."""

from __future__ import annotations

from opsbot.render import ROW_BUTTONS, ROW_CHARS, Button, button_rows


def labels(rows: list[list[Button]]) -> list[list[str]]:
    return [[b.label for b in row] for row in rows]


def test_an_alert_cards_five_buttons_take_two_rows_in_their_order() -> None:
    names = ["📜 Logs", "🔄 Restart", "🔕 Silence 1h", "👀 Ack", "🚨 Declare incident"]
    rows = button_rows([Button(n, n) for n in names])
    assert labels(rows) == [names[:3], names[3:]]


def test_no_row_holds_more_than_three_or_runs_past_a_phones_width() -> None:
    for count in range(1, 12):
        for width in (3, 9, 14, 29, 40):
            buttons = [Button("x" * width, str(i)) for i in range(count)]
            rows = button_rows(buttons)
            assert [b for row in rows for b in row] == buttons  # nothing lost, order kept
            for row in rows:
                assert len(row) <= ROW_BUTTONS
                assert len(row) == 1 or sum(len(b.label) for b in row) <= ROW_CHARS


def test_a_single_button_and_none() -> None:
    assert labels(button_rows([Button("Refresh", "r")])) == [["Refresh"]]
    assert button_rows([]) == []
