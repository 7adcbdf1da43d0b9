"""The one exception of the live mirror: its text is one line, printed with exit status 2."""


class LiveError(Exception):
    """A live-mirror failure (bad input, target or receiver gone, no kernel support, no access)."""
