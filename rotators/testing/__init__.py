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

- every step is idempotent: called twice, the second call is harmless (an issuer's second
  ``mint`` for the same ``rotation_id`` returns the same credential, or one that replaced the
  first at the target: never two new credentials left valid), ``mint`` keeps every field of
  the current data, and an issuer's old credential keeps working until ``finalize``;
- a rotation resumes after a simulated crash between any two steps (the step that was running
  is run again by a new instance with ``attempt + 1``, seeing the notes the crashed one put:
  ``ctx.notes`` lasts for one rotation, and a new rotation starts with none);
- ``finalize`` is safe to repeat;
- ``verify`` rejects a wrong credential (raises a :class:`~rotators.RotatorError`);
- a rotator that tells who uses a credential (overrides ``in_use``) returns a
  :class:`~rotators.Usage` or None and changes nothing; when the target can open sessions
  (``Target.session(data)``, a context manager), it counts an open session of the old
  credential, stops counting it once closed, and never counts one of the new credential;
- no secret value (any string of the old, new or wrong data) appears in what the rotator
  logged through ``ctx.log`` or the ``logging`` module, in the text of any exception, or in
  its notes (the engine stores them in clear).

Failures raise :class:`ConformanceError` (an ``AssertionError``) naming the check and step.
"""

from rotators.testing.conformance import Conformance
from rotators.testing.errors import ConformanceError
from rotators.testing.log import CapturingLog
from rotators.testing.rotation import make_context
from rotators.testing.scenario import Scenario, Target, wrong_credential
from rotators.testing.vault import MemoryVault

__all__ = [
    "CapturingLog",
    "Conformance",
    "ConformanceError",
    "MemoryVault",
    "Scenario",
    "Target",
    "make_context",
    "wrong_credential",
]
