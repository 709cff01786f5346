"""The one error type stages raise for bad input: its message is a single line that names the fix."""


class WebsdError(Exception):
    """A user-facing failure: bad config, missing tool, wrong ref, corrupt input.

    dodo.py turns it into a one-line doit failure instead of a traceback.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # always one line
