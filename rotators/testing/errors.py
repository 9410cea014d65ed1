"""The conformance kit's exception (a rotator broke a rule of the plugin contract) and its
warning (a check did not apply)."""

from __future__ import annotations


class ConformanceError(AssertionError):
    """A rotator broke a rule of the contract; the message names the check and the step.

    ``original`` is the exception a step raised, if any. It is not chained (``__cause__``) so
    that a leaking exception text never reaches the test report; the message is scrubbed.
    """

    original: BaseException | None = None


class ConformanceSkipped(UserWarning):
    """A check did not apply to this rotator or target adapter; the message says why (e.g. the
    adapter has no ``fault(kind)``). :attr:`Conformance.skipped` lists them too."""
