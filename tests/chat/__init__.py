"""The chat face end to end: python-telegram-bot handlers against the fake Bot API."""
