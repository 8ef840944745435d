"""``python -m kinema.video_world_model.cli``: the same as the kinema-wm console script."""

import sys

from . import main

sys.exit(main())
