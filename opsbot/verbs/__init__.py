"""The verbs: the Telegram-free commands the chat and the console share.

``registry`` holds the one table (Caller, Verb, ButtonSpec, dispatch) each wing adds its verbs
and buttons to. Wings import the registry; the registry imports no wing.
"""
