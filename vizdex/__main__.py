"""``python -m vizdex``: the same as the ``vizdex`` command."""

from vizdex.cli.main import main

raise SystemExit(main())
