"""``python -m ringnet`` is the ``ringnet`` command."""

from .cli import main

raise SystemExit(main())
