"""Exceptions the scripts turn into a one-line message and an exit code."""


class CharLSTMError(Exception):
    """A user-fixable problem; the message names the problem and the fix (exit code 2)."""


class TrainingDiverged(Exception):
    """The loss became non-finite; nothing was saved after the last good checkpoint (exit code 1)."""


class SaveFailed(Exception):
    """A checkpoint could not be written (a full disk, say); the complete ones before it are kept (exit code 3)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was saved at the step boundary (exit 128 + signal)."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number
