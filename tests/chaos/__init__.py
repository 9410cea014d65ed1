"""The crash and fault suite: one seeded scenario on a real stack (see ``harness``)."""
