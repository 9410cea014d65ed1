"""``python -m orchestrator`` runs the ``scaivault-rotator`` command line."""

from orchestrator.cli.main import main

main()
