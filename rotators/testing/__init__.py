"""The rotator conformance kit: prove a rotator plugin is safe to run under the engine.

Call it from your own pytest suite with your rotator and a :class:`Target` you provide (an
adapter that creates a fresh credential at your test target and says whether a credential
works there)::

    from rotators.testing import Conformance

    def test_my_rotator_conforms(my_target):
        Conformance(MyRotator, my_target).run()

The kit plays the engine: it builds :class:`~rotators.RotationContext` objects over an
in-memory ScaiVault (:class:`MemoryVault`), calls the steps on a *fresh rotator instance*
each time (as a restarted worker would), stores new versions the way the engine does, and
checks that

- every step is idempotent: called twice, the second call is harmless (issuers' ``mint``
  returns the same credential for the same ``rotation_id``, or replaces the first one so that it
  no longer works: a repeated mint never leaves a credential nobody knows valid), ``mint`` keeps
  every field of the current data, and an issuer's old credential keeps working until
  ``finalize``;
- a rotation resumes after a simulated crash between any two steps (the step that was running
  is run again by a new instance with ``attempt + 1``, seeing the notes the crashed one put:
  ``ctx.notes`` lasts for one rotation, and a new rotation starts with none);
- ``finalize`` is safe to repeat;
- ``verify`` rejects a wrong credential (raises a :class:`~rotators.RotatorError`), and ends in
  :class:`~rotators.CredentialRejected` or :class:`~rotators.PermanentError` once
  ``TransientError`` has been retried for the rotator's ``verify_timeout``;
- ``discard`` (issuers with ``can_discard``) revokes the new credential and only it (where
  ``Target.snapshot()`` is a set, nothing but what ``mint`` added leaves it), or raises
  ``PermanentError`` saying it cannot, and is safe to repeat;
- with the target refusing connections, never answering and answering 5xx
  (``Target.fault(kind)``, e.g. through :class:`FaultProxy`), every step raises
  ``TransientError``, no other exception escapes and no message holds a secret value, and
  no step runs longer than the kit's ``step_timeout`` (a call without a timeout would hang a
  worker);
- ``preflight`` (where the rotator has one) passes against a healthy target, changes nothing
  (``Target.snapshot()``, optional, is unchanged), and raises ``PermanentError`` when a
  ScaiVault secret it reads is missing;
- a rotator that tells who uses a credential (overrides ``in_use``) returns a
  :class:`~rotators.Usage` or None and changes nothing; when the target can open sessions
  (``Target.session(data)``, a context manager), it counts an open session of the old
  credential, stops counting it once closed, and never counts one of the new credential;
- no secret value (any string of the old, new or wrong data) appears in what the rotator
  logged through ``ctx.log`` or the ``logging`` module, in the text of any exception, or in
  its notes (the engine stores them in clear).

Failures raise :class:`ConformanceError` (an ``AssertionError``) naming the check and step. A
check that does not apply is recorded in ``Conformance.skipped`` with why (and, where that
leaves a gap, such as an adapter without ``fault``, a :class:`ConformanceSkipped` warning).
"""

from rotators.testing.conformance import Conformance
from rotators.testing.errors import ConformanceError, ConformanceSkipped
from rotators.testing.faults import FAULTS, FaultProxy
from rotators.testing.log import CapturingLog
from rotators.testing.rotation import make_context
from rotators.testing.scenario import Scenario, Target, wrong_credential
from rotators.testing.vault import MemoryVault

__all__ = [
    "FAULTS",
    "CapturingLog",
    "Conformance",
    "ConformanceError",
    "ConformanceSkipped",
    "FaultProxy",
    "MemoryVault",
    "Scenario",
    "Target",
    "make_context",
    "wrong_credential",
]
