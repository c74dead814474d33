"""The one exception type for mistakes a user can fix (bad config, missing key, unreachable server)."""


class UserError(Exception):
    """Printed by the CLI as a single line, exit code 2, no traceback.

    The message must name the file, key or item at fault and say what to do.
    """
