"""``python -m vizdex``: the same as the ``vizdex`` command."""

from vizdex.cli.main import main

if __name__ == "__main__":  # importing this module (doc tools, package walks) runs nothing
    raise SystemExit(main())
