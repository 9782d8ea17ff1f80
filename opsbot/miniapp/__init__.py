"""The Telegram Mini App: a live board served at ``/board`` by opsbot's web server.

``initdata`` checks Telegram's signature; ``snapshot`` reads the state the board shows;
``acting`` hands the board's buttons to the same verbs the chat uses; ``routes`` is the HTTP
side; ``latency`` keeps each target's last day of check latency; ``link`` the Board button.
"""
