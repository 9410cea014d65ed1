"""``python -m orchestrator`` runs the ``scaivault-rotator`` command line."""

from orchestrator.cli import main

main()
