"""The one exception type for problems a user can fix (paths, config values, prompts)."""


class CharLSTMError(Exception):
    """A user-fixable problem; the message names the problem and the fix."""
